// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * firewall.bpf.c - stateful host firewall: connection tracking on an interface.
 *
 * Two tcx programs share one connection table (ic_fw_ct): one on the interface's
 * ingress (ic_fw_in), one on its egress (ic_fw_out). tcx, not XDP: the interface's XDP
 * hook belongs to the Shield, which drops blocklisted sources before the firewall sees
 * them, and tcx programs of other tools run beside ours. For every IPv4/IPv6 packet:
 *   1. ICMP errors (unreachable, time exceeded, ...) quoting a tracked connection pass
 *      as related; quoting none they are invalid.
 *   2. A packet of a tracked, unexpired connection passes (either direction) and moves
 *      the TCP state machine (SYN, SYN-ACK, ACK, FIN per side, RST).
 *   3. A packet that belongs to no connection and cannot open one (TCP without SYN:
 *      a bare ACK, a RST or FIN for nothing) is invalid: dropped when stateful.
 *   4. Otherwise the rules decide (first match wins, in a fixed number of lookups
 *      whatever their number: see ic_fw_classify), and the default policy of the
 *      packet's direction when none matches; an accepted packet opens a connection.
 *      When the table is full it is dropped and counted (entries are never evicted
 *      to make room: the table is a plain hash, not an LRU). Expired entries are
 *      replaced on sight and removed by user space's sweep.
 * Packets that are not tracked (stateless mode, protocols other than TCP/UDP/ICMP,
 * later fragments, ICMP other than echo and errors) are decided by the rules one by one.
 * IPv6 neighbour discovery (ICMPv6 133-137) always passes, as do non-IP frames.
 * Dry-run counts what would be dropped and passes it.
 *
 * A reject rule drops the packet and answers it (ic_fw_reject): the frame is rewritten
 * in place into a TCP RST (for TCP) or an ICMP/ICMPv6 port unreachable quoting it (for
 * UDP) and redirected back where it came from (out of the interface for an inbound
 * packet, into the host for an outbound one), so the client fails at once instead of
 * timing out. Other protocols, IPv4 options and IPv6 extension headers are dropped
 * without an answer, as is a RST (a RST is never answered).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>
#include "ironclad.h"
#include "parse.h"
#include "bitvec.h"
#include "tokens.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define IC_NS 1000000000ULL
#define IC_IPPROTO_ICMP 1
#define IC_IPPROTO_ICMPV6 58
#define IC_TCP_FIN 0x01
#define IC_TCP_SYN 0x02
#define IC_TCP_RST 0x04
#define IC_TCP_ACK 0x10
#define IC_TCX_NEXT -1
#define IC_TCX_DROP 2
/* skb->mark of an answer to a rejected packet on its way back: the hook it passes next
 * (egress of the same interface for an inbound packet, ingress for an outbound one)
 * lets it through once, since it belongs to no connection. Only the kernel and
 * CAP_NET_ADMIN (SO_MARK) set marks; a remote sender cannot. */
#define IC_FW_ANSWER_MARK 0x1c1ad0feU
#define IC_E2BIG 7
#define IC_ENOMEM 12

/* Sized by user space at load (ironclad_bpf::Firewall's table size). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 262144);
	__type(key, struct ic_ct_key);
	__type(value, struct ic_ct_entry);
} ic_fw_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ic_fw_config);
} ic_fw_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IC_FW_TOTAL_COUNT);
	__type(key, __u32);
	__type(value, struct ic_counter);
} ic_fw_totals SEC(".maps");

/* Puts the limits and states into the object's BTF, where the Rust layout checks read
 * them. */
const volatile enum ic_fw_limits ic_abi_fw_limits = IC_FW_SLOTS;
const volatile enum ic_ct_state ic_abi_ct_state = IC_CT_NEW;
const volatile enum ic_fw_total ic_abi_fw_total = IC_FW_ESTABLISHED;
const volatile enum ic_fw_rule_flags ic_abi_fw_rule_flags = IC_FW_RULE_LOG;
const volatile enum ic_fw_ring ic_abi_fw_ring = IC_FW_RING_BYTES;
const volatile enum ic_fw_event_flags ic_abi_fw_event_flags = IC_FW_EV_RATE_LIMITED;
const volatile enum ic_event_kind ic_abi_fw_event_kind = IC_EVENT_FIREWALL;
const volatile struct ic_fw_event ic_abi_fw_event = {};
const volatile enum ic_fw_action ic_abi_fw_action = IC_FW_ACCEPT;
const volatile struct ic_fw_flow_event ic_abi_fw_flow_event = {};
const volatile enum ic_fw_flow_flags ic_abi_fw_flow_flags = IC_FW_FLOW_INBOUND;
const volatile enum ic_fw_flow_phase ic_abi_fw_flow_phase = IC_FW_FLOW_START;
const volatile enum ic_fw_flow_end ic_abi_fw_flow_end = IC_FW_END_TIMEOUT;
const volatile enum ic_ct_flags ic_abi_ct_flags = IC_CT_F_ORIG_LO;
const volatile enum ic_ct_window_limits ic_abi_ct_window_limits = IC_CT_WSCALE_NONE;
const volatile enum ic_fw_flags ic_abi_fw_flags = IC_FW_F_DROP_IN;
const volatile enum ic_fw_limit_kind ic_abi_fw_limit_kind = IC_FW_LIMIT_SOURCE;
const volatile enum ic_fw_limit_sizes ic_abi_fw_limit_sizes = IC_FW_LIMIT_KEYS;
const volatile enum ic_fw_limit_flags ic_abi_fw_limit_flags = IC_FW_LIMIT_F_DRY_RUN;
const volatile struct ic_fw_limit_config ic_abi_fw_limit_config = {};
const volatile struct ic_fw_limit_key ic_abi_fw_limit_key = {};
const volatile struct ic_fw_limit_bucket ic_abi_fw_limit_bucket = {};
const volatile struct ic_fw_limit_event ic_abi_fw_limit_event = {};

/* The rules' classes (see struct ic_fw_addr_key in ironclad.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_FW_MAX_PREFIXES);
	__type(key, struct ic_fw_addr_key);
	__type(value, __u32);
} ic_fw_addr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_FW_MAX_PIECES);
	__type(key, struct ic_fw_port_key);
	__type(value, __u32);
} ic_fw_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_FW_MAX_WORDS);
	__type(key, struct ic_fw_word_key);
	__type(value, __u64);
} ic_fw_words SEC(".maps");

/* By slot * IC_FW_BUCKETS + bucket: 1 + the class of the bucket's rules without `dnat:
 * true` (what a packet no port forward translated may match), or IC_FW_NO_MASK (0, as
 * the array starts). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * IC_FW_BUCKETS);
	__type(key, __u32);
	__type(value, __u32);
} ic_fw_untranslated SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_FW_MAX_CLASSES);
	__type(key, __u64);
	__type(value, struct ic_fw_summary);
} ic_fw_summaries SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_FW_SLOTS * IC_FW_BUCKETS * IC_FW_MAX_RULES);
	__type(key, __u32);
	__type(value, struct ic_fw_rule);
} ic_fw_rules SEC(".maps");

/* Logged matches (struct ic_fw_event). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, IC_FW_RING_BYTES);
} ic_fw_events SEC(".maps");

/* Sampled reports of the default policy's drops: the rate and its bucket. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ic_fw_default_log);
} ic_fw_default_log SEC(".maps");

/* Rate-limited rules' token buckets, by rule id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_FW_BUCKETS * IC_FW_MAX_RULES + 1);
	__type(key, __u32);
	__type(value, struct ic_fw_bucket);
} ic_fw_rate SEC(".maps");

/* Rate limits on new inbound connections (struct ic_fw_limit_config in ironclad.h):
 * the configuration and the buckets. The buckets are an LRU hash: a flood from
 * ever-new sources evicts the coldest buckets, never fails to find room, and the
 * hot ones (a busy port, the interface's ceiling, an abusive subnet) stay. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ic_fw_limit_config);
} ic_fw_limit_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, IC_FW_LIMIT_KEYS);
	__type(key, struct ic_fw_limit_key);
	__type(value, struct ic_fw_limit_bucket);
} ic_fw_limits SEC(".maps");

/* Per-rule packets and bytes, by rule id (index 0 unused). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IC_FW_BUCKETS * IC_FW_MAX_RULES + 1);
	__type(key, __u32);
	__type(value, struct ic_counter);
} ic_fw_rule_counters SEC(".maps");

/* SYN-flood defence (struct ic_syn_config in ironclad.h): the configuration, the
 * protected ports (bit p of word p / 64) and the measured SYN rate. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ic_syn_config);
} ic_fw_syn_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, IC_SYN_PORT_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} ic_fw_syn_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ic_syn_state);
} ic_fw_syn_state SEC(".maps");

const volatile enum ic_syn_mode ic_abi_syn_mode = IC_SYN_OFF;
const volatile enum ic_syn_limits ic_abi_syn_limits = IC_SYN_PORT_WORDS;
const volatile struct ic_syn_config ic_abi_syn_config = {};
const volatile struct ic_syn_state ic_abi_syn_state = {};

/* IDS selection (see the IDS section of ironclad.h): the configuration, the ports that
 * select a connection, the inspected connections and the payload snippets. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ic_ids_config);
} ic_ids_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, IC_IDS_PORTS);
	__type(key, __u32);
	__type(value, __u8);
} ic_ids_ports SEC(".maps");

/* Not an LRU hash: those are preallocated (about 7 MB for every firewall, IDS or
 * not). Entries go with their connection (user space's sweep); when it is full, new
 * connections are not inspected. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_IDS_FLOWS);
	__type(key, struct ic_ct_key);
	__type(value, struct ic_ids_flow);
} ic_ids_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, IC_IDS_RING_BYTES);
} ic_ids_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_IDS_PREFIXES);
	__type(key, struct ic_ids_prefix_key);
	__type(value, __u32);
} ic_ids_prefixes SEC(".maps");

/* The prefix check's key and the payload's first bytes, off the stack (the firewall's
 * call chain has no room for them). */
struct ic_ids_prefix_scratch {
	struct ic_ids_prefix_key key;
	__u8 head[IC_IDS_PREFIX_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ic_ids_prefix_scratch);
} ic_ids_prefix_scratch SEC(".maps");

const volatile enum ic_ids_limits ic_abi_ids_limits = IC_IDS_SNAP;
const volatile enum ic_ids_flags ic_abi_ids_flags = IC_IDS_F_ON;
const volatile enum ic_ids_port_bits ic_abi_ids_port_bits = IC_IDS_PORT_TCP;
const volatile enum ic_ids_snippet_flags ic_abi_ids_snippet_flags = IC_IDS_SNIP_ORIG;
const volatile struct ic_ids_config ic_abi_ids_config = {};
const volatile struct ic_ids_flow ic_abi_ids_flow = {};
const volatile struct ic_ids_snippet ic_abi_ids_snippet = {};
const volatile struct ic_ids_prefix_key ic_abi_ids_prefix_key = {};

/* Linux 6.9. Weak: on an older kernel libbpf resolves it to nothing, ic_syn_supported()
 * is false at load, and the code that calls it is dead, never verified: the firewall
 * loads and works there without the defence. */
extern int bpf_sk_assign_tcp_reqsk(struct __sk_buff *skb, struct sock *sk,
				   struct bpf_tcp_req_attrs *attrs, int attrs__sz) __ksym __weak;

static __always_inline int ic_syn_supported(void)
{
	return bpf_ksym_exists(bpf_sk_assign_tcp_reqsk);
}

/* The packet as the firewall sees it. */
struct ic_fw_pkt {
	union {
		__u8 src[16];
		__u64 src64[2]; /* the same, for 8-byte copies (ic_bv_addr_class) */
	};
	union {
		__u8 dst[16];
		__u64 dst64[2];
	};
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 fragment; /* 1: a non-first fragment (no L4 header); 2: the first fragment
			* of a UDP datagram split in several */
	__u32 seq;         /* TCP: the sequence number, host order */
	union {
		__u32 ack;     /* TCP: the acknowledgment number, host order */
		__u32 frag_id; /* a fragment (fragment != 0): its identification, network
				* order (UDP and later fragments have no ack) */
	};
	__u16 win;         /* TCP: the window field, host order (unscaled) */
	__u16 payload_off; /* TCP/UDP: where the payload starts, from the IP header */
	__u16 payload_len; /* TCP/UDP: its length (0 when unknown: IPv6 extension headers) */
	__u8 translated;   /* IC_FW_CB_DNAT: a port forward translated it (rules with
			    * `dnat: true`); the low byte of skb->cb[0] as it came */
	__u8 _pad0;
};

/* skb->cb[0] from ic_nat_in to ic_fw on one packet: a port forward translated it.
 * Copied into the packet as it is and compared only in ic_fw_classify_key (a global
 * function): a comparison in ic_fw would give the verifier two states to walk for
 * every later instruction of the firewall (6.1's budget of 1M ran out). */
#define IC_FW_CB_DNAT 0xd7

static __always_inline void ic_fw_count(__u32 which, __u64 bytes)
{
	struct ic_counter *c = bpf_map_lookup_elem(&ic_fw_totals, &which);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline void ic_v4_mapped(__u8 out[16], __be32 addr)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, &addr, 4);
}

/* Negative, zero or positive as a is below, equal to or above b. */
static __always_inline int ic_addr_cmp(const __u8 a[16], const __u8 b[16])
{
#pragma unroll
	for (int i = 0; i < 16; i++) {
		if (a[i] != b[i])
			return a[i] < b[i] ? -1 : 1;
	}
	return 0;
}

/* The canonical key of a flow from (src, sport) to (dst, dport). Returns whether the
 * sender is the key's lower end. */
static __always_inline int ic_ct_make_key(struct ic_ct_key *key, const __u8 src[16],
					  const __u8 dst[16], __u16 sport, __u16 dport,
					  __u8 proto)
{
	int c = ic_addr_cmp(src, dst);
	int from_lo = c < 0 || (c == 0 && sport <= dport);

	__builtin_memset(key, 0, sizeof(*key));
	if (from_lo) {
		__builtin_memcpy(key->addr_lo, src, 16);
		__builtin_memcpy(key->addr_hi, dst, 16);
		key->port_lo = sport;
		key->port_hi = dport;
	} else {
		__builtin_memcpy(key->addr_lo, dst, 16);
		__builtin_memcpy(key->addr_hi, src, 16);
		key->port_lo = dport;
		key->port_hi = sport;
	}
	key->proto = proto;
	return from_lo;
}

static __always_inline int ic_is_echo(__u8 proto, __u8 type)
{
	if (proto == IC_IPPROTO_ICMP)
		return type == 8 || type == 0;
	return type == 128 || type == 129;
}

static __always_inline int ic_is_icmp_error(__u8 proto, __u8 type)
{
	if (proto == IC_IPPROTO_ICMP)
		return type == 3 || type == 4 || type == 11 || type == 12;
	return type >= 1 && type <= 4;
}

/* Reads the L4 fields at l4 (ports, TCP flags, ICMP type and echo identifier). */
static __always_inline int ic_fw_l4(void *l4, void *data_end, struct ic_fw_pkt *p,
				    __u32 l4_off, __u32 l4_len)
{
	if (p->proto == IC_IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		__u32 hlen;

		if ((void *)(tcp + 1) > data_end)
			return -1;
		p->sport = bpf_ntohs(tcp->source);
		p->dport = bpf_ntohs(tcp->dest);
		p->tcp_flags = ((__u8 *)tcp)[13];
		p->seq = bpf_ntohl(tcp->seq);
		p->ack = bpf_ntohl(tcp->ack_seq);
		p->win = bpf_ntohs(tcp->window);
		hlen = tcp->doff * 4;
		if (l4_len > hlen && l4_off + hlen < 0xffff) {
			p->payload_off = l4_off + hlen;
			p->payload_len = l4_len - hlen > 0xffff ? 0xffff : l4_len - hlen;
		}
	} else if (p->proto == IC_IPPROTO_UDP) {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end)
			return -1;
		p->sport = bpf_ntohs(udp->source);
		p->dport = bpf_ntohs(udp->dest);
		if (l4_len > 8 && l4_off + 8 < 0xffff) {
			p->payload_off = l4_off + 8;
			p->payload_len = l4_len - 8 > 0xffff ? 0xffff : l4_len - 8;
		}
	} else if (p->proto == IC_IPPROTO_ICMP || p->proto == IC_IPPROTO_ICMPV6) {
		__u8 *icmp = l4;

		if ((void *)(icmp + 8) > data_end)
			return -1;
		p->icmp_type = icmp[0];
		if (ic_is_echo(p->proto, p->icmp_type)) {
			/* Both directions of an echo carry the same identifier. */
			p->sport = bpf_ntohs(*(__be16 *)(icmp + 4));
			p->dport = p->sport;
		}
	}
	return 0;
}

/* Parses the IP header at l3 (and its L4 header) into p. Returns -1 when truncated. */
static __always_inline int ic_fw_parse(void *l3, void *data_end, int family,
				       struct ic_fw_pkt *p)
{
	if (family == IC_L3_IPV4) {
		struct iphdr *ip = l3;

		if ((void *)(ip + 1) > data_end || ip->ihl < 5)
			return -1;
		ic_v4_mapped(p->src, ip->saddr);
		ic_v4_mapped(p->dst, ip->daddr);
		p->proto = ip->protocol;
		if (ip->frag_off & bpf_htons(0x1fff)) {
			p->fragment = 1;
			p->frag_id = ip->id;
			return 0;
		}
		{
			__u32 hlen = ip->ihl * 4, total = bpf_ntohs(ip->tot_len);
			int ret = ic_fw_l4(l3 + hlen, data_end, p, hlen,
					   total > hlen ? total - hlen : 0);

			if ((ip->frag_off & bpf_htons(0x2000)) && p->proto == IC_IPPROTO_UDP) {
				p->fragment = 2;
				p->frag_id = ip->id;
			}
			return ret;
		}
	}
	struct ipv6hdr *ip6 = l3;
	struct ic_l4 l4 = {};

	if ((void *)(ip6 + 1) > data_end)
		return -1;
	__builtin_memcpy(p->src, &ip6->saddr, 16);
	__builtin_memcpy(p->dst, &ip6->daddr, 16);
	if (ip6->nexthdr == IC_IPPROTO_TCP || ip6->nexthdr == IC_IPPROTO_UDP ||
	    ip6->nexthdr == IC_IPPROTO_ICMPV6) {
		p->proto = ip6->nexthdr;
		return ic_fw_l4(ip6 + 1, data_end, p, sizeof(*ip6), bpf_ntohs(ip6->payload_len));
	}
	/* Extension headers: find the protocol; ports only for TCP/UDP. */
	ic_parse_l4_v6(ip6, data_end, &l4);
	p->proto = l4.proto;
	p->sport = l4.sport;
	p->dport = l4.dport;
	if (l4.frag)
		p->frag_id = l4.frag_id;
	if (l4.proto == IC_IPPROTO_TCP || l4.proto == IC_IPPROTO_UDP) {
		if (!l4.sport && !l4.dport)
			p->fragment = 1; /* a later fragment, or a chain too long to follow */
		else if (l4.frag == 1 && l4.proto == IC_IPPROTO_UDP)
			p->fragment = 2;
	} else if (l4.proto == IC_IPPROTO_ICMPV6) {
		p->fragment = 1; /* ICMPv6 behind extension headers: untracked */
	}
	return 0;
}

/* An ICMP error quotes the packet that caused it (sent by the error's destination):
 * finds that packet's connection. */
static __always_inline struct ic_ct_entry *ic_fw_related(void *l3, void *data_end, int family)
{
	struct ic_fw_pkt inner = {};
	struct ic_ct_key key;
	void *quoted;

	if (family == IC_L3_IPV4) {
		struct iphdr *ip = l3;

		if ((void *)(ip + 1) > data_end || ip->ihl < 5)
			return NULL;
		quoted = l3 + ip->ihl * 4 + 8;
	} else {
		quoted = l3 + sizeof(struct ipv6hdr) + 8;
	}
	if (ic_fw_parse(quoted, data_end, family, &inner) < 0 || inner.fragment == 1)
		return NULL;
	if (inner.proto != IC_IPPROTO_TCP && inner.proto != IC_IPPROTO_UDP &&
	    !((inner.proto == IC_IPPROTO_ICMP || inner.proto == IC_IPPROTO_ICMPV6) &&
	      ic_is_echo(inner.proto, inner.icmp_type)))
		return NULL;
	ic_ct_make_key(&key, inner.src, inner.dst, inner.sport, inner.dport, inner.proto);
	return bpf_map_lookup_elem(&ic_fw_ct, &key);
}

static __always_inline __u64 ic_ct_timeout(const struct ic_fw_config *cfg, __u8 proto,
					   __u8 state)
{
	__u32 s;

	if (proto == IC_IPPROTO_TCP) {
		s = state < IC_CT_STATE_COUNT ? cfg->tcp_timeout[state & 7] : 0;
	} else if (proto == IC_IPPROTO_UDP) {
		s = state == IC_CT_ESTABLISHED ? cfg->udp_stream_timeout : cfg->udp_timeout;
	} else {
		s = cfg->icmp_timeout;
	}
	return (__u64)s * IC_NS;
}

/* Moves a TCP connection's state for a packet from its opening side (orig) or the
 * other one. A RST closes it only when `exact` (its sequence number is the one the
 * receiver expects, ic_ct_window); another RST inside the window passes on to the
 * receiver, which answers it with a challenge ACK (RFC 5961), and the connection
 * stays. */
static __always_inline void ic_ct_tcp(struct ic_ct_entry *e, __u8 flags, int orig, int from_lo,
				      int exact)
{
	__u8 state = e->state;

	if (flags & IC_TCP_RST) {
		if (exact) {
			e->state = IC_CT_CLOSING;
			e->flags |= IC_CT_F_RESET;
		}
		return;
	}
	if (flags & IC_TCP_FIN) {
		e->flags |= from_lo ? IC_CT_F_FIN_LO : IC_CT_F_FIN_HI;
		if ((e->flags & (IC_CT_F_FIN_LO | IC_CT_F_FIN_HI)) ==
		    (IC_CT_F_FIN_LO | IC_CT_F_FIN_HI))
			e->state = IC_CT_CLOSING;
		else if (state < IC_CT_FIN_WAIT)
			e->state = IC_CT_FIN_WAIT;
		return;
	}
	if (state == IC_CT_SYN_SENT && !orig && (flags & IC_TCP_SYN) && (flags & IC_TCP_ACK))
		e->state = IC_CT_SYN_RECV;
	else if (state == IC_CT_SYN_RECV && orig && (flags & IC_TCP_ACK))
		e->state = IC_CT_ESTABLISHED;
}

struct ic_fw_match {
	__u32 slot;
	__u32 classes[4];
	__u64 summary[IC_FW_SUMMARY_WORDS];
	__u32 bit; /* out: the matching rule's bit */
	int found;
	__u32 mask;   /* with `masked`: a fifth class, ANDed into each word (not the
		       * summaries: a word it empties only costs the scan a step) */
	int masked;
};

/* bpf_loop callback: the next candidate word (in summary order). Stops at the first
 * word whose AND is not zero. */
static long ic_fw_scan(__u32 i, void *ctx)
{
	struct ic_fw_match *m = ctx;
	__u32 w;
	__u64 hits;

	if (!ic_bv_next_word(m->summary, &w))
		return 1;
	hits = ic_bv_word(&ic_fw_words, m->slot, m->classes, 4, w);
	if (hits && m->masked) {
		struct ic_fw_word_key key = { .class_id = m->mask, .word = w, .slot = m->slot };
		__u64 *word = bpf_map_lookup_elem(&ic_fw_words, &key);

		hits = word ? hits & *word : 0;
	}
	if (hits) {
		m->bit = w * 64 + ic_lowest_bit(hits);
		m->found = 1;
		return 1;
	}
	return 0;
}

/* The key in ic_fw_rules of the first rule of `bucket` matching the packet, or -1. A
 * global function: the verifier checks it once, not once per call site and program
 * (inlined three times into each program, with its bpf_loop callback, the programs
 * went past the 1M-instruction budget of older verifiers such as 6.1's). */
__attribute__((noinline)) int ic_fw_classify_key(__u32 slot, __u32 bucket, struct ic_fw_pkt *p)
{
	struct ic_fw_match m = { .slot = slot & 1 };
	int icmp;
	__u16 sport, dport;

	if (!p || bucket >= IC_FW_BUCKETS)
		return -1;
	icmp = p->proto == IC_IPPROTO_ICMP || p->proto == IC_IPPROTO_ICMPV6;
	sport = icmp ? 0 : p->sport;
	dport = icmp ? p->icmp_type : p->dport;
	{
		__u8 tag[4] = { m.slot, bucket, IC_FW_DIM_SRC, 0 };

		if (ic_bv_addr_class(&ic_fw_addr, tag, p->src64, &m.classes[0]))
			return -1;
		tag[2] = IC_FW_DIM_DST;
		if (ic_bv_addr_class(&ic_fw_addr, tag, p->dst64, &m.classes[1]))
			return -1;
		tag[2] = IC_FW_DIM_SPORT;
		if (ic_bv_port_class(&ic_fw_ports, tag, sport, &m.classes[2]))
			return -1;
		tag[2] = IC_FW_DIM_DPORT;
		if (ic_bv_port_class(&ic_fw_ports, tag, dport, &m.classes[3]))
			return -1;
	}
	if (ic_bv_summaries(&ic_fw_summaries, m.slot, m.classes, 4, m.summary))
		return -1;
	/* Rules with `dnat: true` match only what a port forward translated. */
	if (p->translated != IC_FW_CB_DNAT) {
		__u32 at = m.slot * IC_FW_BUCKETS + bucket;
		__u32 *mask = bpf_map_lookup_elem(&ic_fw_untranslated, &at);

		if (mask && *mask != IC_FW_NO_MASK) {
			m.mask = *mask - 1;
			m.masked = 1;
		}
	}
	/* At most 256 candidate words: every bitmap has IC_FW_SUMMARY_WORDS * 64. */
	bpf_loop(IC_FW_SUMMARY_WORDS * 64, ic_fw_scan, &m, 0);
	if (!m.found || m.bit >= IC_FW_MAX_RULES)
		return -1;
	return (int)((m.slot * IC_FW_BUCKETS + bucket) * IC_FW_MAX_RULES + m.bit);
}

/* The first rule of `bucket` matching the packet, or NULL. */
static __always_inline struct ic_fw_rule *ic_fw_classify(__u32 slot, __u32 bucket,
							 struct ic_fw_pkt *p)
{
	int found = ic_fw_classify_key(slot, bucket, p);
	__u32 key;

	if (found < 0)
		return NULL;
	key = (__u32)found;
	return bpf_map_lookup_elem(&ic_fw_rules, &key);
}

static __always_inline __u32 ic_fw_bucket(int inbound, __u8 proto)
{
	__u32 p;

	switch (proto) {
	case IC_IPPROTO_TCP:
		p = 0;
		break;
	case IC_IPPROTO_UDP:
		p = 1;
		break;
	case IC_IPPROTO_ICMP:
		p = 2;
		break;
	case IC_IPPROTO_ICMPV6:
		p = 3;
		break;
	default:
		p = 4;
	}
	return (inbound ? 0 : IC_FW_PROTOS) + p;
}

/* Whether a rate-limited rule has a token left for one more connection. */
static __always_inline int ic_fw_rate_ok(const struct ic_fw_rule *rule)
{
	__u32 id = rule->rule_id;
	__s64 cap = (__s64)rule->rate_burst * IC_NS;
	__u64 now = bpf_ktime_get_ns();
	struct ic_fw_bucket *b = bpf_map_lookup_elem(&ic_fw_rate, &id);

	if (!b) {
		struct ic_fw_bucket fresh = { .tokens = cap - IC_NS, .last_ns = now };

		if (cap < IC_NS)
			return 0;
		bpf_map_update_elem(&ic_fw_rate, &id, &fresh, BPF_NOEXIST);
		return 1;
	}
	return ic_tokens_take(&b->tokens, &b->last_ns, rule->rate_per_sec, cap, now);
}

/* Reports a logged rule's match; a full ring buffer is counted, never waited on. */
static __noinline void ic_fw_report(const struct ic_fw_pkt *p, __u32 rule_id, __u8 action,
				    __u8 flags, __u32 ifindex)
{
	struct ic_fw_event *e = bpf_ringbuf_reserve(&ic_fw_events, sizeof(*e), 0);
	int icmp;

	if (!e) {
		ic_fw_count(IC_FW_EVENTS_LOST, 0);
		return;
	}
	icmp = p->proto == IC_IPPROTO_ICMP || p->proto == IC_IPPROTO_ICMPV6;
	e->hdr.version = IC_ABI_VERSION;
	e->hdr.kind = IC_EVENT_FIREWALL;
	e->hdr.size = sizeof(*e);
	e->hdr.ktime_ns = bpf_ktime_get_ns();
	__builtin_memcpy(e->src, p->src, 16);
	__builtin_memcpy(e->dst, p->dst, 16);
	e->rule_id = rule_id;
	e->ifindex = ifindex;
	e->sport = icmp ? 0 : p->sport;
	e->dport = icmp ? p->icmp_type : p->dport;
	e->proto = p->proto;
	e->action = action;
	e->flags = flags;
	e->_pad0 = 0;
	bpf_ringbuf_submit(e, 0);
}

/* Reports a packet the default policy drops, when the sample allows (at most
 * log_default_drops a second). A global function, so the verifier checks it once for
 * every caller: ic_fw's inlined body is near the verifier's budget on Linux 6.1, and
 * each of its decisions may call this. */
__attribute__((noinline)) int ic_fw_default_report(struct ic_fw_pkt *p, __u32 ifindex,
						   __u32 inbound)
{
	__u32 zero = 0;
	struct ic_fw_default_log *l = bpf_map_lookup_elem(&ic_fw_default_log, &zero);
	struct ic_fw_config *cfg = bpf_map_lookup_elem(&ic_fw_config, &zero);
	__u8 flags = inbound ? IC_FW_EV_INBOUND : 0;

	if (!p || !l || !cfg || !l->per_sec)
		return 0;
	if (!ic_tokens_take(&l->tokens, &l->last_ns, l->per_sec, (__s64)l->per_sec * IC_NS,
			    bpf_ktime_get_ns()))
		return 0;
	if (cfg->flags & IC_FW_F_DRY_RUN)
		flags |= IC_FW_EV_DRY_RUN;
	ic_fw_report(p, 0, IC_FW_DROP, flags, ifindex);
	return 1;
}

/* ---- Rate limits on new inbound connections (firewall.limits) ---- */

/* Reports that a limit's bucket refused connections: `dropped` since its last report. */
static __always_inline void ic_fw_limit_report(const struct ic_fw_pkt *p,
					       const struct ic_fw_limit_key *k,
					       const struct ic_fw_limit_rate *rate, __u8 prefix,
					       __u64 dropped, __u32 ifindex, int dry_run)
{
	struct ic_fw_limit_event *e = bpf_ringbuf_reserve(&ic_fw_events, sizeof(*e), 0);
	int icmp = p->proto == IC_IPPROTO_ICMP || p->proto == IC_IPPROTO_ICMPV6;

	if (!e) {
		ic_fw_count(IC_FW_EVENTS_LOST, 0);
		return;
	}
	e->hdr.version = IC_ABI_VERSION;
	e->hdr.kind = IC_EVENT_FW_LIMIT;
	e->hdr.size = sizeof(*e);
	e->hdr.ktime_ns = bpf_ktime_get_ns();
	__builtin_memcpy(e->key, k->addr, 16);
	__builtin_memcpy(e->src, p->src, 16);
	__builtin_memcpy(e->dst, p->dst, 16);
	e->dropped = dropped;
	e->ifindex = ifindex;
	e->per_sec = rate->per_sec;
	e->burst = rate->burst;
	e->sport = icmp ? 0 : p->sport;
	e->dport = icmp ? p->icmp_type : p->dport;
	e->proto = p->proto;
	e->kind = k->kind;
	e->prefix = prefix;
	e->flags = dry_run ? IC_FW_LIMIT_F_DRY_RUN : 0;
	__builtin_memset(e->_pad0, 0, sizeof(e->_pad0));
	bpf_ringbuf_submit(e, 0);
}

/* Zeroes the bits of a 16-byte address after the first `bits`. */
static __always_inline void ic_mask_addr(__u8 addr[16], __u32 bits)
{
	for (int i = 0; i < 16; i++) {
		__u32 first = (__u32)i * 8;

		if (bits <= first)
			addr[i] = 0;
		else if (bits < first + 8)
			addr[i] &= (__u8)(0xff << (first + 8 - bits));
	}
}

static __always_inline int ic_is_mapped(const __u8 a[16])
{
	return !a[0] && !a[1] && !a[2] && !a[3] && !a[4] && !a[5] && !a[6] && !a[7] &&
	       !a[8] && !a[9] && a[10] == 0xff && a[11] == 0xff;
}

/* Takes a token from the `kind` limit's bucket for this connection: 1 if it had one
 * (or the limit is off), 0 if it is spent (then counted, and reported once a second). */
static __always_inline int ic_fw_limit_take(const struct ic_fw_limit_config *c, __u32 kind,
					    const struct ic_fw_pkt *p, __u32 ifindex,
					    __u64 len, int dry_run, __u64 now)
{
	const struct ic_fw_limit_rate *rate;
	struct ic_fw_limit_bucket *b;
	struct ic_fw_limit_key k = {};
	__u8 prefix = 0;
	__s64 cap;

	if (kind >= IC_FW_LIMIT_KINDS)
		return 1;
	rate = &c->rates[kind];
	if (!rate->per_sec)
		return 1;
	k.kind = kind;
	switch (kind) {
	case IC_FW_LIMIT_SOURCE:
		__builtin_memcpy(k.addr, p->src, 16);
		break;
	case IC_FW_LIMIT_SUBNET:
		__builtin_memcpy(k.addr, p->src, 16);
		prefix = ic_is_mapped(p->src) ? c->v4_prefix : c->v6_prefix;
		ic_mask_addr(k.addr, ic_is_mapped(p->src) ? 96 + (__u32)prefix : prefix);
		break;
	case IC_FW_LIMIT_PORT:
		/* ICMP has no port: one bucket for all of it (per protocol). */
		k.proto = p->proto;
		if (p->proto == IC_IPPROTO_TCP || p->proto == IC_IPPROTO_UDP)
			k.port = p->dport;
		break;
	default:
		k.ifindex = ifindex;
	}
	cap = (__s64)rate->burst * IC_NS;
	b = bpf_map_lookup_elem(&ic_fw_limits, &k);
	if (!b) {
		struct ic_fw_limit_bucket fresh = { .tokens = cap - IC_NS, .last_ns = now };

		if (cap >= IC_NS) {
			bpf_map_update_elem(&ic_fw_limits, &k, &fresh, BPF_NOEXIST);
			return 1;
		}
		/* A burst of 0 admits nothing: the bucket exists to count and report. */
		fresh.tokens = 0;
		bpf_map_update_elem(&ic_fw_limits, &k, &fresh, BPF_NOEXIST);
		b = bpf_map_lookup_elem(&ic_fw_limits, &k);
		if (!b)
			return 0;
	} else if (ic_tokens_take(&b->tokens, &b->last_ns, rate->per_sec, cap, now)) {
		return 1;
	}
	ic_fw_count(IC_FW_LIMIT_SOURCE_DROPS + kind, len);
	__sync_fetch_and_add(&b->dropped, 1);
	if (!b->event_ns || now - b->event_ns >= IC_NS) {
		__u64 n = b->dropped;

		b->event_ns = now;
		__sync_fetch_and_add(&b->dropped, -n);
		ic_fw_limit_report(p, &k, rate, prefix, n, ifindex, dry_run);
	}
	return 0;
}

/* Whether the limits admit one more new inbound connection: 1, or 0 when one of them
 * is spent (counted and reported by it). Narrowest first; a refusal charges no wider
 * limit. A function of its own: verified once, not inlined into each caller. */
__attribute__((noinline)) int ic_fw_limits_ok(struct ic_fw_pkt *p, __u32 ifindex, __u64 len,
					      int dry_run)
{
	__u32 zero = 0;
	struct ic_fw_limit_config *c = bpf_map_lookup_elem(&ic_fw_limit_config, &zero);
	__u64 now;

	if (!p || !c)
		return 1;
	if (!c->rates[0].per_sec && !c->rates[1].per_sec && !c->rates[2].per_sec &&
	    !c->rates[3].per_sec)
		return 1;
	now = bpf_ktime_get_ns();
	for (__u32 kind = 0; kind < IC_FW_LIMIT_KINDS; kind++) {
		if (!ic_fw_limit_take(c, kind, p, ifindex, len, dry_run, now))
			return 0;
	}
	return 1;
}

#define IC_PF_KTHREAD 0x00200000

/* The local process that is sending an outbound packet through a socket: its pid and
 * command name, and the socket's cgroup. tcx egress runs in the context of the sender
 * for a packet a process's connect() or sendmsg() sends; a packet sent from a timer or
 * softirq runs in whatever task it interrupted, so the task is taken only when it is
 * not a kernel thread and sits in the socket's own cgroup. */
static __always_inline void ic_fw_local(struct __sk_buff *skb, struct ic_ct_entry *e,
					__u8 comm[16])
{
	struct task_struct *task;
	__u64 cgroup = bpf_skb_cgroup_id(skb);

	e->cgroup_id = cgroup;
	if (!cgroup)
		return; /* no full socket: forwarded, or a reply the kernel built */
	task = bpf_get_current_task_btf();
	if (!task || (task->flags & IC_PF_KTHREAD) || task->cgroups->dfl_cgrp->kn->id != cgroup)
		return;
	e->pid = task->tgid;
	__builtin_memcpy(comm, task->comm, 16);
}

/* Why a tracked connection ended, from its entry. */
static __always_inline __u8 ic_fw_end_reason(const struct ic_ct_entry *e, __u8 proto)
{
	if (e->flags & IC_CT_F_RESET)
		return IC_FW_END_RESET;
	if (proto == IC_IPPROTO_TCP && e->state == IC_CT_CLOSING)
		return IC_FW_END_FIN;
	return IC_FW_END_TIMEOUT;
}

/* Reports a flow record (a connection's start, or its end when a new connection takes
 * an ended one's place before the sweep saw it); a full ring is counted. A global
 * function, so the verifier checks it once: as a static one it was checked again on
 * every path that reached a call, and Debian 12's 6.1 spent about a fifth of its
 * budget for ic_fw_in filling this record. The command name is an array's pointer:
 * a global function may read only as many bytes as its argument's type has. */
__attribute__((noinline)) int ic_fw_flow_report(const struct ic_ct_key *k,
						const struct ic_ct_entry *e, __u8 phase,
						__u8 reason, const __u8 (*comm)[16])
{
	struct ic_fw_flow_event *ev;
	int orig_lo;

	if (!k || !e || !comm)
		return 0;
	ev = bpf_ringbuf_reserve(&ic_fw_events, sizeof(*ev), 0);
	if (!ev) {
		ic_fw_count(IC_FW_EVENTS_LOST, 0);
		return 0;
	}
	orig_lo = !!(e->flags & IC_CT_F_ORIG_LO);
	ev->hdr.version = IC_ABI_VERSION;
	ev->hdr.kind = IC_EVENT_FLOW;
	ev->hdr.size = sizeof(*ev);
	ev->hdr.ktime_ns = bpf_ktime_get_ns();
	__builtin_memcpy(ev->src, orig_lo ? k->addr_lo : k->addr_hi, 16);
	__builtin_memcpy(ev->dst, orig_lo ? k->addr_hi : k->addr_lo, 16);
	ev->sport = orig_lo ? k->port_lo : k->port_hi;
	ev->dport = orig_lo ? k->port_hi : k->port_lo;
	ev->cgroup_id = e->cgroup_id;
	ev->created_ns = e->created_ns;
	ev->last_seen_ns = e->last_seen_ns;
	ev->packets_orig = e->packets_orig;
	ev->bytes_orig = e->bytes_orig;
	ev->packets_reply = e->packets_reply;
	ev->bytes_reply = e->bytes_reply;
	ev->rule_id = e->rule_id;
	ev->ifindex = e->ifindex;
	ev->pid = e->pid;
	ev->proto = k->proto;
	ev->flags = (e->flags & IC_CT_F_INBOUND) ? IC_FW_FLOW_INBOUND : 0;
	ev->phase = phase;
	ev->reason = reason;
	ev->state = e->state;
	__builtin_memset(ev->_pad0, 0, sizeof(ev->_pad0));
	__builtin_memcpy(ev->comm, *comm, 16);
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

/* What the rules (or, when none matches, the default policy) say about a packet that
 * opens a connection or is not tracked: IC_FW_ACCEPT, IC_FW_DROP or IC_FW_REJECT. A
 * rule whose rate limit is spent drops (without an answer). A logged rule reports. */
static __always_inline int ic_fw_decide(const struct ic_fw_config *cfg, int inbound,
					struct ic_fw_pkt *p, __u64 len, __u32 ifindex,
					__u32 *rule_id, int *record)
{
	struct ic_fw_rule *rule = ic_fw_classify(cfg->slot & 1, ic_fw_bucket(inbound, p->proto), p);

	*rule_id = 0;
	*record = !!(cfg->flags & IC_FW_F_FLOWS);
	if (rule) {
		__u32 id = rule->rule_id;

		*rule_id = id;
		if (rule->flags & IC_FW_RULE_FLOWS)
			*record = 1;
		struct ic_counter *c = bpf_map_lookup_elem(&ic_fw_rule_counters, &id);

		if (c) {
			c->packets++;
			c->bytes += len;
		}
		__u8 flags = inbound ? IC_FW_EV_INBOUND : 0;
		int action = rule->action;

		if (rule->rate_per_sec && !ic_fw_rate_ok(rule)) {
			ic_fw_count(IC_FW_RATE_LIMITED, len);
			flags |= IC_FW_EV_RATE_LIMITED;
			action = IC_FW_DROP;
		}
		if (rule->flags & IC_FW_RULE_LOG) {
			if (action != IC_FW_ACCEPT && (cfg->flags & IC_FW_F_DRY_RUN))
				flags |= IC_FW_EV_DRY_RUN;
			ic_fw_report(p, id, rule->action, flags, ifindex);
		}
		return action;
	}
	if (!(cfg->flags & (inbound ? IC_FW_F_DROP_IN : IC_FW_F_DROP_OUT)))
		return IC_FW_ACCEPT;
	ic_fw_default_report(p, ifindex, inbound);
	return IC_FW_DROP;
}

/* ---- SYN-flood defence (firewall.syn_flood; struct ic_syn_config) ----
 *
 * A SYN to a protected port is answered by ic_fw_syn (XDP) with a SYN-ACK whose
 * sequence number is the kernel's own SYN cookie; nothing is stored anywhere, so a
 * flood from spoofed sources costs the listener, the SYN queue and the connection
 * table nothing. The client's ACK reaches the tcx ingress program as a packet of no
 * connection: its cookie is checked with the same kernel machinery, the rules decide
 * it as a new connection, and it is handed to the listening socket as a request
 * (bpf_sk_assign_tcp_reqsk) from which the kernel makes the established socket.
 *
 * The cookie carries the client's MSS class (the kernel's table); the client's window
 * scale and SACK permission ride in the low bits of the timestamp we send, which the
 * client echoes (as the kernel's own cookies do). A client without timestamps gets
 * neither window scaling nor SACK, as with the kernel's cookies. */
#define IC_TCPOPT_EOL 0
#define IC_TCPOPT_NOP 1
#define IC_TCPOPT_MSS 2
#define IC_TCPOPT_WINDOW 3
#define IC_TCPOPT_SACK_PERM 4
#define IC_TCPOPT_TIMESTAMP 8
#define IC_TCP_MAX_WSCALE 14
#define IC_SYN_WINDOW 64240
#define IC_MS 1000000ULL

/* The kernel's MSS classes for cookies (net/ipv4/syncookies.c, net/ipv6/syncookies.c):
 * the cookie encodes the index of the largest class not above the client's MSS. */
static const __u16 ic_msstab4[4] = {536, 1300, 1440, 1460};
static const __u16 ic_msstab6[4] = {1220, 1420, 1440, 8940};

/* A TCP segment's IP and TCP headers copied out of the packet: the syncookie helpers
 * read them here, and the SYN-ACK is built from them. */
struct ic_syn_hdrs {
	union {
		struct iphdr ip4;
		struct ipv6hdr ip6;
	};
	struct tcphdr tcp;
	__u8 opts[64]; /* the options (at most 40 bytes); 64 so that a read at any index
			* masked with 63 stays inside (see ic_opt) */
	__u32 optlen;
	__u32 off;    /* ic_tcp_option's position in opts */
	/* The sender's options. */
	__u32 tsval;  /* host order */
	__u32 tsecr;  /* host order */
	__u16 mss;    /* 0: none offered */
	__u8 wscale;  /* IC_SYN_TS_WSCALE_NONE: none offered */
	__u8 sack;
	__u8 ts;
	__u8 _pad0[3];
};

/* Per-CPU scratch for the headers (too large for the stack beside the rest of ic_fw). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ic_syn_hdrs);
} ic_fw_syn_scratch SEC(".maps");

/* Per-CPU scratch for a connection being opened: with the window fields the entry
 * no longer fits the stack beside the rest of ic_fw (512 bytes over its calls). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ic_ct_entry);
} ic_fw_ct_scratch SEC(".maps");

/* The scratch headers, their option fields cleared. */
static __always_inline struct ic_syn_hdrs *ic_syn_scratch(void)
{
	__u32 zero = 0;
	struct ic_syn_hdrs *h = bpf_map_lookup_elem(&ic_fw_syn_scratch, &zero);

	if (h) {
		h->optlen = 0;
		h->tsval = 0;
		h->tsecr = 0;
		h->mss = 0;
		h->sack = 0;
		h->ts = 0;
	}
	return h;
}

static __always_inline int ic_syn_protected(__u16 port)
{
	__u32 word = port >> 6;
	__u64 *w = bpf_map_lookup_elem(&ic_fw_syn_ports, &word);

	return w && ((*w >> (port & 63)) & 1);
}

/* Option byte i (masked so the verifier sees it inside opts whatever the compiler
 * proved about i; the empty asm keeps the mask from being optimised away). */
static __always_inline __u8 ic_opt(const struct ic_syn_hdrs *h, __u32 i)
{
	asm volatile("" : "+r"(i));
	return h->opts[i & 63];
}

/* One option at h->off (a bpf_loop callback: verified once, whatever the options'
 * layout, where an unrolled loop multiplies the verifier's states). Returns 1 to stop. */
struct ic_syn_opts_ctx {
	struct ic_syn_hdrs *h;
};

static long ic_tcp_option(__u32 index, void *ctx)
{
	struct ic_syn_hdrs *h = ((struct ic_syn_opts_ctx *)ctx)->h;
	__u32 off = h->off;
	__u8 kind, size;

	if (off >= h->optlen || off >= 39)
		return 1;
	kind = ic_opt(h, off);
	if (kind == IC_TCPOPT_EOL)
		return 1;
	if (kind == IC_TCPOPT_NOP) {
		h->off = off + 1;
		return 0;
	}
	size = ic_opt(h, off + 1);
	if (size < 2 || off + size > h->optlen)
		return 1;
	if (kind == IC_TCPOPT_MSS && size == 4) {
		h->mss = (__u16)ic_opt(h, off + 2) << 8 | ic_opt(h, off + 3);
	} else if (kind == IC_TCPOPT_WINDOW && size == 3) {
		__u8 ws = ic_opt(h, off + 2);

		h->wscale = ws > IC_TCP_MAX_WSCALE ? IC_TCP_MAX_WSCALE : ws;
	} else if (kind == IC_TCPOPT_SACK_PERM && size == 2) {
		h->sack = 1;
	} else if (kind == IC_TCPOPT_TIMESTAMP && size == 10) {
		h->ts = 1;
		h->tsval = (__u32)ic_opt(h, off + 2) << 24 | (__u32)ic_opt(h, off + 3) << 16 |
			   (__u32)ic_opt(h, off + 4) << 8 | ic_opt(h, off + 5);
		h->tsecr = (__u32)ic_opt(h, off + 6) << 24 | (__u32)ic_opt(h, off + 7) << 16 |
			   (__u32)ic_opt(h, off + 8) << 8 | ic_opt(h, off + 9);
	}
	h->off = off + size;
	return 0;
}

/* Reads the options copied into h (at most 40 bytes, so at most 40 options). */
static __always_inline void ic_tcp_options(struct ic_syn_hdrs *h)
{
	struct ic_syn_opts_ctx c = {.h = h};

	h->wscale = IC_SYN_TS_WSCALE_NONE;
	h->off = 0;
	bpf_loop(40, ic_tcp_option, &c, 0);
}

/* Copies the IP header at l3off and the TCP header after it (with its options) into
 * h: `load` is bpf_xdp_load_bytes or bpf_skb_load_bytes. Evaluates to 0, or -1 when
 * the segment is truncated or malformed. */
#define IC_SYN_LOAD(load, ctx, l3off, family, h)                                         \
	({                                                                                 \
		int __r = -1;                                                              \
		__u32 __iplen = (family) == IC_L3_IPV4 ? 20 : 40;                          \
		if (!load(ctx, l3off, &(h)->ip4, __iplen) &&                               \
		    !load(ctx, (l3off) + __iplen, &(h)->tcp, 20)) {                        \
			__u32 __thlen = (h)->tcp.doff * 4;                                 \
			if (__thlen >= 20 && __thlen <= 60) {                              \
				(h)->optlen = __thlen - 20;                                \
				if (!(h)->optlen ||                                        \
				    !load(ctx, (l3off) + __iplen + 20, (h)->opts,          \
					  (h)->optlen))                                    \
					__r = 0;                                           \
			}                                                                  \
		}                                                                          \
		__r;                                                                       \
	})

/* The kernel's cookie for a SYN with the segment's addresses and ports, sequence
 * number `seq` and an MSS option of `mss`: the cookie in the low 32 bits, the MSS class
 * above; negative on error. */
static __always_inline __s64 ic_syn_gen(struct ic_syn_hdrs *h, int family, __u32 seq,
					__u16 mss)
{
	struct {
		struct tcphdr th;
		__be32 mss_opt;
	} syn = {};

	syn.th.source = h->tcp.source;
	syn.th.dest = h->tcp.dest;
	syn.th.seq = bpf_htonl(seq);
	syn.th.doff = sizeof(syn) / 4;
	syn.th.syn = 1;
	syn.mss_opt = bpf_htonl(IC_TCPOPT_MSS << 24 | 4 << 16 | mss);
	if (family == IC_L3_IPV4)
		return bpf_tcp_raw_gen_syncookie_ipv4(&h->ip4, &syn.th, sizeof(syn));
	return bpf_tcp_raw_gen_syncookie_ipv6(&h->ip6, &syn.th, sizeof(syn));
}

/* under_attack: counts this SYN in the current second and says whether cookies answer
 * (the rate is over the threshold, or was less than hold_ms ago). Shared by every CPU:
 * the window's reset races, which can only miscount a few SYNs at a second's edge. */
static __always_inline int ic_syn_under_attack(const struct ic_syn_config *cfg)
{
	__u32 zero = 0;
	struct ic_syn_state *s = bpf_map_lookup_elem(&ic_fw_syn_state, &zero);
	__u64 now = bpf_ktime_get_ns();
	__u64 n;

	if (!s)
		return 0;
	if (now - s->window_ns >= IC_NS) {
		s->window_ns = now;
		s->window_syns = 0;
	}
	n = __sync_fetch_and_add(&s->window_syns, 1) + 1;
	if (n > cfg->threshold_pps) {
		__u64 until = now + (__u64)cfg->hold_ms * IC_MS;

		if (now >= s->attack_until_ns)
			__sync_fetch_and_add(&s->attacks, 1);
		if (until > s->attack_until_ns)
			s->attack_until_ns = until;
		return 1;
	}
	return now < s->attack_until_ns;
}

/* An ACK to a protected port with no connection: whether it completes a handshake
 * answered with a cookie (h holds its headers). Fills attrs for the listener. */
static __always_inline int ic_syn_cookie_ok(struct ic_syn_hdrs *h, int family,
					    const struct ic_syn_config *cfg,
					    struct bpf_tcp_req_attrs *attrs)
{
	__u32 cookie = bpf_ntohl(h->tcp.ack_seq) - 1;
	__u32 seq = bpf_ntohl(h->tcp.seq) - 1;
	const __u16 *tab = family == IC_L3_IPV4 ? ic_msstab4 : ic_msstab6;
	__u16 mss = 0;

	/* The helper that checks a cookie does not say which MSS class it carries: the
	 * cookie is made again for each class (largest first, the common one). Only when
	 * the minute counter inside the cookie moved between the SYN and this ACK does
	 * none match; the check helper (which accepts cookies up to two minutes old) then
	 * decides, and the connection gets the smallest class. */
#pragma unroll
	for (int i = 3; i >= 0; i--) {
		__s64 r = ic_syn_gen(h, family, seq, tab[i]);

		if (r >= 0 && (__u32)r == cookie) {
			mss = tab[i];
			break;
		}
	}
	if (!mss) {
		long bad = family == IC_L3_IPV4 ? bpf_tcp_raw_check_syncookie_ipv4(&h->ip4, &h->tcp)
					       : bpf_tcp_raw_check_syncookie_ipv6(&h->ip6, &h->tcp);

		if (bad)
			return 0;
		mss = tab[0];
	}
	__builtin_memset(attrs, 0, sizeof(*attrs));
	attrs->mss = mss;
	if (h->ts) {
		__u8 ws = h->tsecr & IC_SYN_TS_WSCALE_NONE;

		attrs->tstamp_ok = 1;
		attrs->rcv_tsval = h->tsval;
		attrs->rcv_tsecr = h->tsecr;
		attrs->sack_ok = !!(h->tsecr & IC_SYN_TS_SACK);
		if (ws != IC_SYN_TS_WSCALE_NONE) {
			attrs->wscale_ok = 1;
			attrs->snd_wscale = ws > IC_TCP_MAX_WSCALE ? IC_TCP_MAX_WSCALE : ws;
			attrs->rcv_wscale = cfg->wscale;
		}
	}
	return 1;
}

/* Hands a checked cookie ACK to its listening socket as a request the kernel turns
 * into an established socket. Returns 0 when it did; without a listener the ACK goes
 * on, and the kernel answers it with a RST as for any closed port. */
static __always_inline int ic_syn_to_listener(struct __sk_buff *skb, struct ic_syn_hdrs *h,
					      int family, struct bpf_tcp_req_attrs *attrs)
{
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *skc;
	struct tcp_sock *tp;
	__u32 size;
	int err = -1;

	if (family == IC_L3_IPV4) {
		tuple.ipv4.saddr = h->ip4.saddr;
		tuple.ipv4.daddr = h->ip4.daddr;
		tuple.ipv4.sport = h->tcp.source;
		tuple.ipv4.dport = h->tcp.dest;
		size = sizeof(tuple.ipv4);
	} else {
		__builtin_memcpy(tuple.ipv6.saddr, &h->ip6.saddr, 16);
		__builtin_memcpy(tuple.ipv6.daddr, &h->ip6.daddr, 16);
		tuple.ipv6.sport = h->tcp.source;
		tuple.ipv6.dport = h->tcp.dest;
		size = sizeof(tuple.ipv6);
	}
	skc = bpf_skc_lookup_tcp(skb, &tuple, size, BPF_F_CURRENT_NETNS, 0);
	if (!skc)
		return -1;
	if (skc->state == BPF_TCP_LISTEN) {
		tp = bpf_skc_to_tcp_sock(skc);
		if (tp)
			err = bpf_sk_assign_tcp_reqsk(skb, (struct sock *)tp, attrs, sizeof(*attrs));
	}
	bpf_sk_release(skc);
	return err;
}

/* A UDP datagram split in fragments: its later fragments carry no ports. When its first
 * fragment passes as a packet of a tracked connection, the ports are remembered by
 * (source, destination, identification, protocol), and a later fragment that finds
 * them passes with it (as Cilium does; the kernel reassembles them after this hook). */
struct ic_frag_key {
	__u8 src[16];
	__u8 dst[16];
	__u32 id;     /* network order */
	__u8 proto;
	__u8 _pad0[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct ic_frag_key);
	__type(value, __u32); /* sport << 16 | dport, host order */
} ic_fw_frags SEC(".maps");

/* `note`: remembers the first fragment `p` (returns 0); else whether the later
 * fragment `p` belongs to a datagram whose first fragment passed. Not inlined: its key
 * stays off the firewall's stack. */
static __noinline int ic_fw_frag(const struct ic_fw_pkt *p, int note)
{
	struct ic_frag_key k = {};
	__u32 ports;

	__builtin_memcpy(k.src, p->src, 16);
	__builtin_memcpy(k.dst, p->dst, 16);
	k.id = p->frag_id;
	k.proto = p->proto;
	if (note) {
		ports = (__u32)p->sport << 16 | p->dport;
		bpf_map_update_elem(&ic_fw_frags, &k, &ports, BPF_ANY);
		return 0;
	}
	return bpf_map_lookup_elem(&ic_fw_frags, &k) != 0;
}

/* ic_fw's verdicts. */
#define IC_V_DROP 0
#define IC_V_PASS 1
#define IC_V_REJECT 2

/* The verdict for one frame: IC_V_PASS, IC_V_DROP or IC_V_REJECT. */
/* ic_ids_packet's `how`: the snippet's flags and where the IP header starts. */
static __always_inline __u32 ic_ids_how(const struct ic_ct_entry *e, int orig, int inbound,
					long l3off)
{
	__u32 how = (__u32)l3off << 8;

	if (orig)
		how |= IC_IDS_SNIP_ORIG;
	if (e->flags & IC_CT_F_INBOUND)
		how |= IC_IDS_SNIP_INBOUND;
	if (inbound)
		how |= IC_IDS_SNIP_INGRESS;
	return how;
}

/* Starts an inspected connection's IDS entry; non-zero when there is no room. Not
 * inlined: its stack stays out of the firewall's (the combined stack of the deepest
 * call chain must fit in 512 bytes on every kernel). */
static __noinline int ic_ids_open(const struct ic_ct_key *key)
{
	struct ic_ids_flow none = {};

	return bpf_map_update_elem(&ic_ids_flows, key, &none, BPF_ANY) ? 1 : 0;
}

/* Whether the IDS inspects a connection that `p` opens (see ironclad.h). */
static __always_inline int ic_ids_selects(const struct ic_fw_pkt *p)
{
	struct ic_ids_config *c;
	__u32 zero = 0, port;
	__u8 bit, *v;

	if (p->proto != IC_IPPROTO_TCP && p->proto != IC_IPPROTO_UDP)
		return 0;
	c = bpf_map_lookup_elem(&ic_ids_config, &zero);
	if (!c || !(c->flags & IC_IDS_F_ON))
		return 0;
	if (c->flags & IC_IDS_F_ALL_PORTS)
		return 1;
	bit = p->proto == IC_IPPROTO_TCP ? IC_IDS_PORT_TCP : IC_IDS_PORT_UDP;
	port = p->dport;
	v = bpf_map_lookup_elem(&ic_ids_ports, &port);
	if (v && (*v & bit))
		return 1;
	port = p->sport;
	v = bpf_map_lookup_elem(&ic_ids_ports, &port);
	if (v && (*v & bit))
		return 1;
	return c->sample_every && bpf_get_prandom_u32() % c->sample_every == 0;
}

/* The prefix check's loop state (bpf_loop: its body is verified once, where an
 * unrolled loop of 16 lengths with their lookups was too many branches for 6.1). */
struct ic_ids_prefix_walk {
	__u32 lens;
	__u32 n;
	__u16 port;
	__u8 hit;
};

/* Length i + 1: the key grows by the payload's byte i, then the lookups the lengths
 * present ask for. */
static long ic_ids_prefix_step(__u32 i, void *ctx)
{
	struct ic_ids_prefix_walk *w = ctx;
	struct ic_ids_prefix_scratch *sc;
	__u32 zero = 0, at = i & (IC_IDS_PREFIX_MAX - 1);

	if (i >= w->n)
		return 1;
	sc = bpf_map_lookup_elem(&ic_ids_prefix_scratch, &zero);
	if (!sc)
		return 1;
	sc->key.bytes[at] = sc->head[at];
	if (!(w->lens & (0x10001U << at)))
		return 0;
	sc->key.len = at + 1;
	sc->key.port = w->port;
	if ((w->lens & (1U << at)) && bpf_map_lookup_elem(&ic_ids_prefixes, &sc->key)) {
		w->hit = 1;
		return 1;
	}
	sc->key.port = 0;
	if ((w->lens & (0x10000U << at)) && bpf_map_lookup_elem(&ic_ids_prefixes, &sc->key)) {
		w->hit = 1;
		return 1;
	}
	return 0;
}

/* Whether the payload at `off` (of `avail` bytes) starts with a `drop` rule's prefix
 * for this server port and direction (struct ic_ids_prefix_key). */
static __always_inline int ic_ids_prefix_hit(struct __sk_buff *skb, __u32 lens, __u32 off,
					     __u32 avail, __u16 port, int to_server)
{
	struct ic_ids_prefix_scratch *sc;
	struct ic_ids_prefix_walk w = {.lens = lens, .port = port};
	__u32 zero = 0, n;

	sc = bpf_map_lookup_elem(&ic_ids_prefix_scratch, &zero);
	if (!sc)
		return 0;
	n = avail < IC_IDS_PREFIX_MAX ? avail : IC_IDS_PREFIX_MAX;
	if (n < 1)
		return 0;
	__builtin_memset(sc->head, 0, sizeof(sc->head));
	__builtin_memset(sc->key.bytes, 0, sizeof(sc->key.bytes));
	/* The same n (1..IC_IDS_PREFIX_MAX), in a form whose bounds the verifier sees. */
	n = ((n - 1) & (IC_IDS_PREFIX_MAX - 1)) + 1;
	if (bpf_skb_load_bytes(skb, off, sc->head, n) < 0)
		return 0;
	sc->key.to_server = to_server;
	w.n = n;
	bpf_loop(IC_IDS_PREFIX_MAX, ic_ids_prefix_step, &w, 0);
	return w.hit;
}

/* One packet's hand-over to user space (bpf_loop's context, on ic_ids_packet's stack). */
struct ic_ids_chunks {
	struct __sk_buff *skb;
	const struct ic_ct_key *key;
	const struct ic_ct_entry *e;
	const struct ic_fw_pkt *p;
	__u32 how;    /* as ic_ids_packet's */
	__u32 off;    /* where the payload starts in the frame */
	__u32 len;    /* payload bytes to hand over (within the depth) */
	__u32 before; /* payload bytes of this direction counted before the packet */
};

/* bpf_loop callback: the packet's i-th IC_IDS_SNAP bytes as one snippet; the last one
 * flagged IC_IDS_SNIP_LAST. Stops at the end, or when the ring is full (what follows
 * would be past a hole for the matcher anyway). */
static long ic_ids_chunk(__u32 i, void *ctx)
{
	struct ic_ids_chunks *w = ctx;
	const struct ic_fw_pkt *p = w->p;
	struct ic_ids_snippet *ev;
	__u32 at = i * IC_IDS_SNAP, n;

	if (at >= w->len)
		return 1;
	n = w->len - at;
	if (n > IC_IDS_SNAP)
		n = IC_IDS_SNAP;
	ev = bpf_ringbuf_reserve(&ic_ids_ring, sizeof(*ev), 0);
	if (!ev) {
		ic_fw_count(IC_FW_IDS_LOST, 0);
		return 1;
	}
	/* The same n (1..IC_IDS_SNAP), in a form whose bounds the verifier sees. */
	n = ((n - 1) & (IC_IDS_SNAP - 1)) + 1;
	if (bpf_skb_load_bytes(w->skb, w->off + at, ev->data, n) < 0) {
		bpf_ringbuf_discard(ev, 0);
		return 1;
	}
	ev->hdr.version = IC_ABI_VERSION;
	ev->hdr.kind = IC_EVENT_IDS_SNIPPET;
	ev->hdr.size = sizeof(*ev);
	ev->hdr.ktime_ns = bpf_ktime_get_ns();
	__builtin_memcpy(&ev->key, w->key, sizeof(ev->key));
	__builtin_memcpy(ev->src, p->src, 16);
	__builtin_memcpy(ev->dst, p->dst, 16);
	ev->cgroup_id = w->e->cgroup_id;
	ev->pid = w->e->pid;
	ev->ifindex = w->skb->ifindex;
	ev->seq = p->seq + at;
	ev->offset = w->before + at;
	ev->payload_len = p->payload_len;
	ev->sport = p->sport;
	ev->dport = p->dport;
	ev->len = n;
	ev->proto = p->proto;
	ev->flags = (w->how & 0xff) | (at + n >= w->len ? IC_IDS_SNIP_LAST : 0);
	bpf_ringbuf_submit(ev, 0);
	ic_fw_count(IC_FW_IDS_SNIPPETS, n);
	return 0;
}

/* A packet of an inspected connection: hands its payload to user space while the
 * direction is within the depth, every byte of it (a GSO or GRO packet of 64 KiB as
 * well as a small one), IC_IDS_SNAP bytes a snippet. `how`: enum ic_ids_snippet_flags
 * in the low byte, the IP header's offset in the frame above it. Returns -1 when a
 * `drop` rule blocked the connection and the packet must be dropped. */
static __noinline int ic_ids_packet(struct __sk_buff *skb, const struct ic_ct_key *key,
				    const struct ic_ct_entry *e, const struct ic_fw_pkt *p,
				    __u32 how)
{
	struct ic_ids_chunks w;
	struct ic_ids_config *c;
	struct ic_ids_flow *f;
	__u32 zero = 0, before, len, off;
	int hit;

	f = bpf_map_lookup_elem(&ic_ids_flows, key);
	if (!f)
		return 0; /* gone with an earlier connection on these ports */
	c = bpf_map_lookup_elem(&ic_ids_config, &zero);
	if (!c)
		return 0;
	if (f->blocked) {
		ic_fw_count(IC_FW_IDS_BLOCKED, skb->len);
		return c->flags & IC_IDS_F_DRY_RUN ? 0 : -1;
	}
	if (!p->payload_len || !(c->flags & IC_IDS_F_ON))
		return 0;
	before = (how & IC_IDS_SNIP_ORIG) ? f->seen_orig : f->seen_reply;
	if (before >= c->depth)
		return 0;
	if (how & IC_IDS_SNIP_ORIG)
		f->seen_orig = before + p->payload_len;
	else
		f->seen_reply = before + p->payload_len;
	len = c->depth - before;
	if (len > p->payload_len)
		len = p->payload_len;
	if (len < 1)
		return 0;
	off = (how >> 8) + p->payload_off;
	/* The first payload of a direction: a `drop` rule's prefix is matched here, and
	 * the packet itself dropped below (after its snippets went out, so that the alert
	 * names it; without them when the ring is full: the drop does not wait for room). */
	hit = before == 0 && c->prefix_lens &&
	      ic_ids_prefix_hit(skb, c->prefix_lens, off, p->payload_len,
				(how & IC_IDS_SNIP_ORIG) ? p->dport : p->sport,
				!!(how & IC_IDS_SNIP_ORIG));
	w.skb = skb;
	w.key = key;
	w.e = e;
	w.p = p;
	w.how = how;
	w.off = off;
	w.len = len;
	w.before = before;
	bpf_loop((len + IC_IDS_SNAP - 1) / IC_IDS_SNAP, ic_ids_chunk, &w, 0);
	if (hit) {
		f->blocked = 1;
		ic_fw_count(IC_FW_IDS_KERNEL_MATCHED, skb->len);
		return c->flags & IC_IDS_F_DRY_RUN ? 0 : -1;
	}
	return 0;
}

/* The window scale the SYN at l3off offers: IC_CT_WSCALE_NONE when it offers none (or
 * its options cannot be read). */
static __always_inline __u8 ic_syn_wscale(struct __sk_buff *skb, __u32 l3off, int family)
{
	struct ic_syn_hdrs *h = ic_syn_scratch();
	__u32 tcp_off = l3off + (family == IC_L3_IPV4 ? 20 : 40), thlen, optlen;

	if (!h || bpf_skb_load_bytes(skb, tcp_off, &h->tcp, 20))
		return IC_CT_WSCALE_NONE;
	thlen = h->tcp.doff * 4;
	if (thlen <= 20 || thlen > 60)
		return IC_CT_WSCALE_NONE;
	/* 1..40, in a form whose lower bound old verifiers see too (6.1 does not learn it
	 * from a test against 0, and refuses a load of possibly 0 bytes). */
	optlen = ((thlen - 21) & 63) + 1;
	if (bpf_skb_load_bytes(skb, tcp_off + 20, h->opts, optlen))
		return IC_CT_WSCALE_NONE;
	h->optlen = optlen;
	ic_tcp_options(h);
	return h->wscale == IC_SYN_TS_WSCALE_NONE ? IC_CT_WSCALE_NONE : h->wscale;
}

/* What ic_ct_window found. */
enum ic_ct_window_verdict {
	IC_CT_IN_WINDOW = 0,  /* passes; a RST is exactly the expected sequence number */
	IC_CT_RST_INEXACT = 1, /* a RST inside the window but not at its start: passes on */
};

/* Checks a TCP segment of a tracked connection against the window last seen, and
 * records what it moves: the sender's next sequence number and largest window, both
 * sides' window scales from the handshake. Returns an ic_ct_window_verdict, or -1 for a
 * RST or FIN outside the receiver's window: a blind reset has to guess a sequence
 * number inside it, as the kernel's tcp_validate_incoming and netfilter's tcp_in_window
 * require. Data outside the window passes without moving anything (the receiving stack
 * drops it): a spoofed segment never widens what a RST may hit. Before the SYN-ACK
 * nothing is checked but that a RST answering the opening SYN acknowledges it. */
static __always_inline int ic_ct_window(struct ic_ct_entry *e, const struct ic_fw_pkt *p,
					int from_lo, int orig, __u8 wscale)
{
	__u32 s = from_lo ? 0 : 1, r = s ^ 1;
	__u8 flags = p->tcp_flags;
	__u32 win, end, w;
	__s32 d;

	if (flags & IC_TCP_SYN) {
		e->seq_end[s] = p->seq + 1;
		e->max_win[s] = p->win; /* a SYN's window is never scaled */
		e->wscale[s] = wscale;
		if ((flags & IC_TCP_ACK) && !orig && e->state != IC_CT_NEW) {
			/* Scaling holds only when both sides offered it (RFC 7323). */
			if (e->wscale[0] == IC_CT_WSCALE_NONE || e->wscale[1] == IC_CT_WSCALE_NONE) {
				e->wscale[0] = 0;
				e->wscale[1] = 0;
			}
			e->flags |= IC_CT_F_WINDOW;
		}
		return IC_CT_IN_WINDOW;
	}
	if (!(e->flags & IC_CT_F_WINDOW)) {
		if ((flags & IC_TCP_RST) && !orig && e->state == IC_CT_SYN_SENT &&
		    e->seq_end[r] && (!(flags & IC_TCP_ACK) || p->ack != e->seq_end[r]))
			return -1;
		return IC_CT_IN_WINDOW;
	}
	win = e->max_win[r];
	if (win < (__u32)IC_CT_MIN_WINDOW)
		win = IC_CT_MIN_WINDOW;
	if (win > (__u32)IC_CT_MAX_WINDOW)
		win = IC_CT_MAX_WINDOW;
	d = (__s32)(p->seq - e->seq_end[s]);
	if (d <= -(__s32)win || d >= (__s32)win)
		return (flags & (IC_TCP_RST | IC_TCP_FIN)) ? -1 : IC_CT_IN_WINDOW;
	if (flags & IC_TCP_RST)
		return d == 0 ? IC_CT_IN_WINDOW : IC_CT_RST_INEXACT;
	end = p->seq + p->payload_len + ((flags & IC_TCP_FIN) ? 1 : 0);
	if ((__s32)(end - e->seq_end[s]) > 0)
		e->seq_end[s] = end;
	w = (__u32)p->win << (e->wscale[s] & 15);
	if (w > e->max_win[s])
		e->max_win[s] = w;
	return IC_CT_IN_WINDOW;
}

static __always_inline int ic_fw(struct __sk_buff *skb, int inbound)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 ifindex = skb->ifindex;
	__u64 len = skb->len;
	__u32 rule_id = 0;
	int record = 0;
	struct ic_l3_info info = {};
	struct ic_fw_pkt p = {};
	struct ic_ct_key key;
	struct ic_ct_entry *e;
	struct ic_fw_config *cfg;
	__u32 zero = 0;
	__u64 now;
	int family, from_lo, verdict = IC_FW_DROP;
	__u8 open_state = IC_CT_NEW;
	__u8 wscale = IC_CT_WSCALE_NONE;
	/* A cookie handshake's ACK opens the connection with both sides known: the
	 * client's window scale and the listener's, from the cookie (0xff: not that way). */
	__u8 cookie_ws_c = IC_CT_WSCALE_NONE, cookie_ws_l = 0;

	cfg = bpf_map_lookup_elem(&ic_fw_config, &zero);
	if (!cfg)
		return 1;
	family = ic_parse_l2(data, data_end, &info);
	if (family == IC_L3_OTHER) {
		ic_fw_count(IC_FW_NON_IP, len);
		return 1;
	}
	if (family == IC_L3_MALFORMED || ic_fw_parse(info.l3, data_end, family, &p) < 0)
		goto invalid;
	p.translated = (__u8)skb->cb[0];

	if (p.proto == IC_IPPROTO_ICMPV6 && p.fragment != 1 && p.icmp_type >= 133 &&
	    p.icmp_type <= 137) {
		/* Neighbour discovery: IPv6 does not work without it. */
		ic_fw_count(IC_FW_UNTRACKED, len);
		return 1;
	}
	if ((cfg->flags & IC_FW_F_STATEFUL) && p.fragment == 1 && p.proto == IC_IPPROTO_UDP &&
	    ic_fw_frag(&p, 0)) {
		/* A later fragment of a datagram whose first fragment passed. */
		ic_fw_count(IC_FW_ESTABLISHED, len);
		return 1;
	}
	if (!(cfg->flags & IC_FW_F_STATEFUL) || p.fragment == 1 ||
	    (p.proto != IC_IPPROTO_TCP && p.proto != IC_IPPROTO_UDP &&
	     p.proto != IC_IPPROTO_ICMP && p.proto != IC_IPPROTO_ICMPV6) ||
	    (p.proto == IC_IPPROTO_ICMP && family != IC_L3_IPV4) ||
	    (p.proto == IC_IPPROTO_ICMPV6 && family != IC_L3_IPV6)) {
		/* Not tracked: the rules decide each packet (counted once: untracked when
		 * passed, dropped when not). */
		verdict = ic_fw_decide(cfg, inbound, &p, len, ifindex, &rule_id, &record);
		if (verdict != IC_FW_ACCEPT)
			goto dropped;
		ic_fw_count(IC_FW_UNTRACKED, len);
		return 1;
	}
	if ((p.proto == IC_IPPROTO_ICMP || p.proto == IC_IPPROTO_ICMPV6) &&
	    !ic_is_echo(p.proto, p.icmp_type)) {
		if (ic_is_icmp_error(p.proto, p.icmp_type)) {
			e = ic_fw_related(info.l3, data_end, family);
			if (!e)
				goto invalid;
			ic_fw_count(IC_FW_RELATED, len);
			return 1;
		}
		/* Other ICMP (router advertisements, timestamps...): the rules decide. */
		verdict = ic_fw_decide(cfg, inbound, &p, len, ifindex, &rule_id, &record);
		if (verdict != IC_FW_ACCEPT)
			goto dropped;
		ic_fw_count(IC_FW_UNTRACKED, len);
		return 1;
	}

	if (p.proto == IC_IPPROTO_TCP) {
		open_state = IC_CT_SYN_SENT;
		if (p.tcp_flags & IC_TCP_SYN)
			wscale = ic_syn_wscale(skb, (__u32)(info.l3 - data), family);
	}
	now = bpf_ktime_get_ns();
	from_lo = ic_ct_make_key(&key, p.src, p.dst, p.sport, p.dport, p.proto);
	e = bpf_map_lookup_elem(&ic_fw_ct, &key);
	if (e) {
		int orig = !!(e->flags & IC_CT_F_ORIG_LO) == from_lo;
		int reopen = p.proto == IC_IPPROTO_TCP && e->state == IC_CT_CLOSING &&
			     (p.tcp_flags & (IC_TCP_SYN | IC_TCP_ACK)) == IC_TCP_SYN;

		/* Another CPU may have stamped a packet of this connection after this one
		 * read the clock: a last_seen_ns ahead of `now` is fresh, never a wrap of
		 * the subtraction (which read as expired would delete a live connection
		 * and drop the rest of it as invalid). */
		__u64 last = e->last_seen_ns;

		if ((now <= last || now - last <= ic_ct_timeout(cfg, p.proto, e->state)) &&
		    !reopen) {
			int exact = 1;

			if (p.proto == IC_IPPROTO_TCP) {
				int w = ic_ct_window(e, &p, from_lo, orig, wscale);

				/* A RST or FIN outside the window (a blind reset): it
				 * changes nothing and goes no further. */
				if (w < 0)
					goto invalid;
				exact = w == IC_CT_IN_WINDOW;
			}
			if (now > last)
				e->last_seen_ns = now;
			if (orig) {
				e->packets_orig++;
				e->bytes_orig += len;
			} else {
				e->packets_reply++;
				e->bytes_reply += len;
				if (p.proto != IC_IPPROTO_TCP)
					e->state = IC_CT_ESTABLISHED;
			}
			if (p.proto == IC_IPPROTO_TCP)
				ic_ct_tcp(e, p.tcp_flags, orig, from_lo, exact);
			if (p.fragment == 2)
				ic_fw_frag(&p, 1);
			ic_fw_count(IC_FW_ESTABLISHED, len);
			if ((e->flags & IC_CT_F_INSPECT) &&
			    ic_ids_packet(skb, &key, e, &p,
					  ic_ids_how(e, orig, inbound, info.l3 - data)) < 0 &&
			    !(cfg->flags & IC_FW_F_DRY_RUN))
				return IC_V_DROP;
			return 1;
		}
		/* Expired, or a new connection on a closed one's ports: start over. The
		 * sweep will not see this one go, so its end is reported here. */
		if (e->flags & IC_CT_F_RECORD) {
			__u8 none[16] = {};

			ic_fw_flow_report(&key, e, IC_FW_FLOW_END, ic_fw_end_reason(e, p.proto),
					  &none);
		}
		bpf_map_delete_elem(&ic_fw_ct, &key);
	}

	if (p.proto == IC_IPPROTO_TCP &&
	    (p.tcp_flags & (IC_TCP_SYN | IC_TCP_ACK | IC_TCP_RST | IC_TCP_FIN)) != IC_TCP_SYN) {
		/* No connection and no SYN: invalid, unless it is the ACK that completes a
		 * handshake ic_fw_syn answered with a cookie. */
		struct bpf_tcp_req_attrs attrs;
		struct ic_syn_config *sc;
		struct ic_syn_hdrs *h;

		if (!inbound || !ic_syn_supported() ||
		    (p.tcp_flags & (IC_TCP_SYN | IC_TCP_ACK | IC_TCP_RST | IC_TCP_FIN)) !=
			    IC_TCP_ACK ||
		    !ic_syn_protected(p.dport))
			goto invalid;
		sc = bpf_map_lookup_elem(&ic_fw_syn_config, &zero);
		h = ic_syn_scratch();
		if (!sc || !h ||
		    IC_SYN_LOAD(bpf_skb_load_bytes, skb, (__u32)(info.l3 - data), family, h) < 0)
			goto invalid;
		ic_tcp_options(h);
		if (!ic_syn_cookie_ok(h, family, sc, &attrs)) {
			ic_fw_count(IC_FW_COOKIE_INVALID, len);
			goto invalid;
		}
		verdict = ic_fw_decide(cfg, inbound, &p, len, ifindex, &rule_id, &record);
		if (verdict != IC_FW_ACCEPT)
			goto dropped;
		if (!ic_fw_limits_ok(&p, ifindex, len, !!(cfg->flags & IC_FW_F_DRY_RUN))) {
			verdict = IC_FW_DROP;
			goto dropped;
		}
		if (!ic_syn_to_listener(skb, h, family, &attrs))
			ic_fw_count(IC_FW_COOKIE_ACCEPTED, len);
		open_state = IC_CT_ESTABLISHED;
		cookie_ws_c = (attrs.wscale_ok ? attrs.snd_wscale : 0) & 15;
		cookie_ws_l = (attrs.wscale_ok ? attrs.rcv_wscale : 0) & 15;
		goto open;
	}
	verdict = ic_fw_decide(cfg, inbound, &p, len, ifindex, &rule_id, &record);
	if (verdict != IC_FW_ACCEPT)
		goto dropped;
	if (inbound && !ic_fw_limits_ok(&p, ifindex, len, !!(cfg->flags & IC_FW_F_DRY_RUN))) {
		verdict = IC_FW_DROP;
		goto dropped;
	}
open:
	{
		struct ic_ct_entry *fresh = bpf_map_lookup_elem(&ic_fw_ct_scratch, &zero);
		__u8 comm[16] = {};
		int inspect = ic_ids_selects(&p);
		long err;

		if (!fresh)
			goto drop;
		__builtin_memset(fresh, 0, sizeof(*fresh));
		fresh->created_ns = now;
		fresh->last_seen_ns = now;
		fresh->packets_orig = 1;
		fresh->bytes_orig = len;
		fresh->ifindex = ifindex;
		fresh->rule_id = rule_id;
		fresh->state = open_state;
		fresh->flags = (from_lo ? IC_CT_F_ORIG_LO : 0) | (inbound ? IC_CT_F_INBOUND : 0) |
			       (record ? IC_CT_F_RECORD : 0);

		if (p.proto == IC_IPPROTO_TCP && (p.tcp_flags & IC_TCP_SYN)) {
			/* The opening SYN: its side's sequence number, window and scale
			 * (constant indexes: the
			 * compiler turns a variable one into arithmetic the verifier refuses). */
			if (from_lo) {
				fresh->seq_end[0] = p.seq + 1;
				fresh->max_win[0] = p.win;
				fresh->wscale[0] = wscale;
				fresh->wscale[1] = IC_CT_WSCALE_NONE;
			} else {
				fresh->seq_end[1] = p.seq + 1;
				fresh->max_win[1] = p.win;
				fresh->wscale[1] = wscale;
				fresh->wscale[0] = IC_CT_WSCALE_NONE;
			}
		} else if (cookie_ws_c != IC_CT_WSCALE_NONE) {
			/* The ACK of a cookie handshake: this side is the client, the other
			 * the listener. */
			__u32 next = p.seq + p.payload_len, win = (__u32)p.win << (cookie_ws_c & 15);

			if (from_lo) {
				fresh->seq_end[0] = next;
				fresh->seq_end[1] = p.ack;
				fresh->wscale[0] = cookie_ws_c;
				fresh->wscale[1] = cookie_ws_l;
				fresh->max_win[0] = win;
			} else {
				fresh->seq_end[1] = next;
				fresh->seq_end[0] = p.ack;
				fresh->wscale[1] = cookie_ws_c;
				fresh->wscale[0] = cookie_ws_l;
				fresh->max_win[1] = win;
			}
			fresh->flags |= IC_CT_F_WINDOW;
		}

		if (!inbound)
			ic_fw_local(skb, fresh, comm);
		/* Before the connection: its next packet must find it. */
		if (inspect && ic_ids_open(&key))
			inspect = 0;
		if (inspect)
			fresh->flags |= IC_CT_F_INSPECT;
		err = bpf_map_update_elem(&ic_fw_ct, &key, fresh, BPF_NOEXIST);
		if (err == -IC_E2BIG || err == -IC_ENOMEM) {
			ic_fw_count(IC_FW_TABLE_FULL, len);
			goto drop;
		}
		/* -EEXIST: another CPU opened it first; the packet belongs to it. */
		if (!err && record)
			ic_fw_flow_report(&key, fresh, IC_FW_FLOW_START, 0, &comm);
		if (!err && inspect && p.payload_len &&
		    ic_ids_packet(skb, &key, fresh, &p,
				  ic_ids_how(fresh, 1, inbound, info.l3 - data)) < 0)
			goto drop; /* a `drop` rule's prefix, matched in the kernel */
	}
	if (p.fragment == 2)
		ic_fw_frag(&p, 1);
	ic_fw_count(IC_FW_NEW_ACCEPTED, len);
	return 1;

invalid:
	ic_fw_count(IC_FW_INVALID, len);
	if (!(cfg->flags & IC_FW_F_STATEFUL))
		return 1;
	goto drop;
dropped:
	ic_fw_count(IC_FW_DROPPED, len);
drop:
	if (cfg->flags & IC_FW_F_DRY_RUN) {
		ic_fw_count(IC_FW_WOULD_DROP, len);
		return 1;
	}
	return verdict == IC_FW_REJECT ? IC_V_REJECT : IC_V_DROP;
}

/* Ones' complement sum of `size` bytes at `buf` (a multiple of 4), added to `seed`. */
static __always_inline __u32 ic_csum_add(void *buf, __u32 size, __u32 seed)
{
	__s64 sum = bpf_csum_diff(NULL, 0, buf, size, seed);

	return sum < 0 ? seed : (__u32)sum;
}

static __always_inline __u16 ic_csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* The answer to a rejected packet, built on the stack: Ethernet, IP, then a TCP RST
 * (20 bytes) or ICMP (8 bytes) quoting the rejected packet's IP header and 8 bytes.
 * The frame starts 2 bytes in, so the IP header and what follows are 4-byte aligned
 * (the verifier refuses misaligned stack access). */
struct ic_reject_frame {
	__u64 words[15]; /* 2 + the largest frame (ICMPv6: 14 + 40 + 8 + 48 = 110) */
};

/* Fills `ntcp` with the RST answering `tcp`, a segment of `seg_len` bytes: with the
 * ACK of everything the segment carried when it had no ACK itself, else at its ACK's
 * sequence (as the kernel's own reset). -1: a RST (never answered) or a short header. */
static __always_inline int ic_rst_for(struct tcphdr *tcp, void *data_end, __u32 seg_len,
				      struct tcphdr *ntcp)
{
	if ((void *)(tcp + 1) > data_end || tcp->rst)
		return -1;
	ntcp->source = tcp->dest;
	ntcp->dest = tcp->source;
	ntcp->doff = 5;
	ntcp->rst = 1;
	if (tcp->ack) {
		ntcp->seq = tcp->ack_seq;
	} else {
		ntcp->ack = 1;
		ntcp->ack_seq = bpf_htonl(bpf_ntohl(tcp->seq) + seg_len - tcp->doff * 4 +
					  tcp->syn + tcp->fin);
	}
	return 0;
}

/* Rewrites the rejected frame in `skb` into its answer and redirects it back: out of
 * the interface when it came in, into the host when it was going out. Returns the tcx
 * verdict. */
static __noinline int ic_fw_reject(struct __sk_buff *skb, int inbound)
{
	struct ic_reject_frame f;
	__u8 *b = (__u8 *)f.words + 2;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 sum = 0, len = 0, l4 = 0;
	__u32 pseudo[2]; /* the pseudo header's length and protocol words */

	__builtin_memset(&f, 0, sizeof(f));
	if ((void *)(eth + 1) > data_end)
		return IC_TCX_DROP;
	/* Ethernet: back to the sender. */
	__builtin_memcpy(b, eth->h_source, 6);
	__builtin_memcpy(b + 6, eth->h_dest, 6);
	__builtin_memcpy(b + 12, &eth->h_proto, 2);

	if (eth->h_proto == bpf_htons(IC_ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		struct iphdr *nip = (void *)(b + 14);

		if ((void *)(ip + 1) > data_end || ip->ihl != 5 ||
		    (ip->frag_off & bpf_htons(0x3fff)))
			return IC_TCX_DROP;
		nip->version = 4;
		nip->ihl = 5;
		nip->ttl = 64;
		nip->frag_off = bpf_htons(0x4000);
		nip->saddr = ip->daddr;
		nip->daddr = ip->saddr;
		l4 = 14 + 20;
		if (ip->protocol == IPPROTO_TCP) {
			if (ic_rst_for((void *)(ip + 1), data_end, bpf_ntohs(ip->tot_len) - 20,
				       (void *)(b + l4)))
				return IC_TCX_DROP;
			nip->protocol = IPPROTO_TCP;
			len = 20;
		} else if (ip->protocol == IPPROTO_UDP) {
			__u8 *icmp = b + l4;

			if ((void *)ip + 28 > data_end)
				return IC_TCX_DROP;
			icmp[0] = 3; /* destination unreachable */
			icmp[1] = 3; /* port unreachable */
			__builtin_memcpy(icmp + 8, ip, 28);
			nip->protocol = IPPROTO_ICMP;
			len = 8 + 28;
		} else {
			return IC_TCX_DROP;
		}
		nip->tot_len = bpf_htons(20 + len);
		nip->check = ic_csum_fold(ic_csum_add(nip, 20, 0));
		if (nip->protocol == IPPROTO_TCP) {
			/* Pseudo header: source, destination, zero, protocol, TCP length. */
			pseudo[0] = bpf_htonl((IPPROTO_TCP << 16) | 20);
			sum = ic_csum_add(&nip->saddr, 8, 0);
			sum = ic_csum_add(pseudo, 4, sum);
		}
	} else if (eth->h_proto == bpf_htons(IC_ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		struct ipv6hdr *nip6 = (void *)(b + 14);

		if ((void *)(ip6 + 1) > data_end)
			return IC_TCX_DROP;
		nip6->version = 6;
		nip6->hop_limit = 64;
		nip6->saddr = ip6->daddr;
		nip6->daddr = ip6->saddr;
		l4 = 14 + 40;
		if (ip6->nexthdr == IPPROTO_TCP) {
			if (ic_rst_for((void *)(ip6 + 1), data_end, bpf_ntohs(ip6->payload_len),
				       (void *)(b + l4)))
				return IC_TCX_DROP;
			nip6->nexthdr = IPPROTO_TCP;
			len = 20;
		} else if (ip6->nexthdr == IPPROTO_UDP) {
			__u8 *icmp = b + l4;

			if ((void *)ip6 + 48 > data_end)
				return IC_TCX_DROP;
			icmp[0] = 1; /* destination unreachable */
			icmp[1] = 4; /* port unreachable */
			__builtin_memcpy(icmp + 8, ip6, 48);
			nip6->nexthdr = IC_IPPROTO_ICMPV6;
			len = 8 + 48;
		} else {
			return IC_TCX_DROP;
		}
		nip6->payload_len = bpf_htons(len);
		/* Pseudo header: source, destination, upper-layer length, zero, next header. */
		pseudo[0] = bpf_htonl(len);
		pseudo[1] = bpf_htonl(nip6->nexthdr);
		sum = ic_csum_add(&nip6->saddr, 32, 0);
		sum = ic_csum_add(pseudo, 8, sum);
	} else {
		return IC_TCX_DROP;
	}

	/* The L4 checksum: over the pseudo header (TCP, ICMPv6) and the L4 bytes. */
	if (len == 20) {
		struct tcphdr *ntcp = (void *)(b + (l4 == 34 ? 34 : 54));

		sum = ic_csum_add(ntcp, 20, sum);
		ntcp->check = ic_csum_fold(sum);
	} else if (len == 36) {
		__u8 *icmp = b + 34;
		__u16 c = ic_csum_fold(ic_csum_add(icmp, 36, 0));

		__builtin_memcpy(icmp + 2, &c, 2);
	} else {
		__u8 *icmp = b + 54;
		__u16 c = ic_csum_fold(ic_csum_add(icmp, 56, sum));

		__builtin_memcpy(icmp + 2, &c, 2);
	}

	len += l4;
	if (len > sizeof(f) - 2 || bpf_skb_change_tail(skb, len, 0))
		return IC_TCX_DROP;
	if (bpf_skb_store_bytes(skb, 0, b, len, 0))
		return IC_TCX_DROP;
	ic_fw_count(IC_FW_REJECTED, len);
	skb->mark = IC_FW_ANSWER_MARK;
	return bpf_redirect(skb->ifindex, inbound ? 0 : BPF_F_INGRESS);
}

/* ---- NAT (nat.dnat, nat.snat; struct ic_nat_* in ironclad.h) ----
 *
 * The kernel's own NAT engine (bpf_ct_set_nat_info) translates only the connections of
 * its conntrack, and only where an nftables or iptables nat chain has registered its
 * hooks; the firewall keeps its own connection table, so it rewrites packets itself at
 * tcx with the checksum helpers, and keeps the two directions of each translated
 * connection in ic_nat_map, tied to the connection by its key (user space's sweep
 * removes them with it). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ic_nat_config);
} ic_nat_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, IC_NAT_MAX_RULES);
	__type(key, struct ic_nat_dnat_key);
	__type(value, struct ic_nat_target);
} ic_nat_dnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_NAT_MAX_RULES);
	__type(key, struct ic_nat_snat_key);
	__type(value, struct ic_nat_target);
} ic_nat_snat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, IC_NAT_ENTRIES);
	__type(key, struct ic_nat_key);
	__type(value, struct ic_nat_value);
} ic_nat_map SEC(".maps");

/* Packets and bytes each rule translated: forwards at [rule], source translations at
 * [IC_NAT_MAX_RULES + rule]. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * IC_NAT_MAX_RULES);
	__type(key, __u32);
	__type(value, struct ic_counter);
} ic_nat_counters SEC(".maps");

const volatile enum ic_nat_sizes ic_abi_nat_sizes = IC_NAT_MAX_RULES;
const volatile enum ic_nat_rewrite ic_abi_nat_rewrite = IC_NAT_REWRITE_SRC;
const volatile enum ic_nat_kind ic_abi_nat_kind = IC_NAT_DNAT;
const volatile struct ic_nat_dnat_key ic_abi_nat_dnat_key = {};
const volatile struct ic_nat_target ic_abi_nat_target = {};
const volatile struct ic_nat_snat_key ic_abi_nat_snat_key = {};
const volatile struct ic_nat_key ic_abi_nat_key = {};
const volatile struct ic_nat_value ic_abi_nat_value = {};
const volatile struct ic_nat_config ic_abi_nat_config = {};

/* Copies a 16-byte address four bytes at a time (every address here is 4-aligned; a
 * byte-wise copy would spill sixteen registers onto a stack with no room). */
static __always_inline void ic_addr_copy(void *dst, const void *src)
{
	__u32 *d = dst;
	const __u32 *s = src;

	d[0] = s[0];
	d[1] = s[1];
	d[2] = s[2];
	d[3] = s[3];
}

/* ic_ct_make_key with 4-byte copies (the same key). */
static __always_inline void ic_nat_ct_key(struct ic_ct_key *key, const __u8 src[16],
					  const __u8 dst[16], __u16 sport, __u16 dport,
					  __u8 proto)
{
	int c = ic_addr_cmp(src, dst);
	int from_lo = c < 0 || (c == 0 && sport <= dport);

	__builtin_memset(key, 0, sizeof(*key));
	ic_addr_copy(key->addr_lo, from_lo ? src : dst);
	ic_addr_copy(key->addr_hi, from_lo ? dst : src);
	key->port_lo = from_lo ? sport : dport;
	key->port_hi = from_lo ? dport : sport;
	key->proto = proto;
}

/* A TCP or UDP packet NAT may rewrite: its tuple and where its headers are. */
struct ic_nat_pkt {
	struct ic_fw_pkt p;
	__u32 l3off;
	__u32 l4off;
	int family;
};

/* NAT's working set, per CPU (ic_fw_in's and ic_fw_out's stacks are nearly full). */
struct ic_nat_scratch {
	struct ic_nat_pkt n;
	struct ic_nat_key k;
	struct ic_nat_value fwd;
	struct ic_nat_value back;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ic_nat_scratch);
} ic_nat_scratch SEC(".maps");

/* The scratch, its packet cleared. */
static __always_inline struct ic_nat_scratch *ic_nat_scratch_get(void)
{
	__u32 zero = 0;
	struct ic_nat_scratch *sc = bpf_map_lookup_elem(&ic_nat_scratch, &zero);

	if (sc)
		__builtin_memset(&sc->n, 0, sizeof(sc->n));
	return sc;
}

/* 0 and the packet's tuple for a TCP or UDP packet NAT can rewrite (not a fragment,
 * no IPv6 extension headers), else -1. Parsed here rather than by ic_fw_parse: this
 * runs in its own function beside the firewall's, on a stack with little room. */
static __always_inline int ic_nat_parse(struct __sk_buff *skb, struct ic_nat_pkt *n)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ic_l3_info info = {};
	int family = ic_parse_l2(data, data_end, &info);
	struct udphdr *udp;
	void *l4;

	if (family == IC_L3_IPV4) {
		struct iphdr *ip = info.l3;

		/* Fragments (offset or more-fragments set) are not translated. */
		if ((void *)(ip + 1) > data_end || ip->ihl < 5 ||
		    (ip->frag_off & bpf_htons(0x3fff)) ||
		    (ip->protocol != IC_IPPROTO_TCP && ip->protocol != IC_IPPROTO_UDP))
			return -1;
		ic_v4_mapped(n->p.src, ip->saddr);
		ic_v4_mapped(n->p.dst, ip->daddr);
		n->p.proto = ip->protocol;
		l4 = (void *)ip + ip->ihl * 4;
	} else if (family == IC_L3_IPV6) {
		struct ipv6hdr *ip6 = info.l3;

		if ((void *)(ip6 + 1) > data_end ||
		    (ip6->nexthdr != IC_IPPROTO_TCP && ip6->nexthdr != IC_IPPROTO_UDP))
			return -1;
		ic_addr_copy(n->p.src, &ip6->saddr);
		ic_addr_copy(n->p.dst, &ip6->daddr);
		n->p.proto = ip6->nexthdr;
		l4 = ip6 + 1;
	} else {
		return -1;
	}
	udp = l4;
	if ((void *)(udp + 1) > data_end)
		return -1;
	n->p.sport = bpf_ntohs(udp->source);
	n->p.dport = bpf_ntohs(udp->dest);
	if (n->p.proto == IC_IPPROTO_TCP) {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end)
			return -1;
		n->p.tcp_flags = ((__u8 *)tcp)[13];
	}
	n->l3off = (__u32)(info.l3 - data);
	n->l4off = (__u32)(l4 - data);
	n->family = family;
	return 0;
}

static __always_inline void ic_nat_key_of(struct ic_nat_key *k, const struct ic_fw_pkt *p,
					  __u32 ifindex, __u8 egress)
{
	__builtin_memset(k, 0, sizeof(*k));
	ic_addr_copy(k->src, p->src);
	ic_addr_copy(k->dst, p->dst);
	k->ifindex = ifindex;
	k->sport = p->sport;
	k->dport = p->dport;
	k->proto = p->proto;
	k->egress = egress;
}

/* Rewrites the packet's source (dst 0) or destination (dst 1) to addr and port, with
 * the IPv4 header checksum and the TCP/UDP checksum (pseudo-header included) kept
 * right; a UDP checksum of 0 (none, IPv4) stays 0. 0, or -1 when a helper failed. */
static __always_inline int ic_nat_rewrite(struct __sk_buff *skb, const struct ic_nat_pkt *n,
					  int dst, const __u8 addr[16], __u16 port)
{
	__u32 csum_off = n->l4off + (n->p.proto == IC_IPPROTO_TCP ? 16 : 6);
	__u64 mangled = n->p.proto == IC_IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__u16 old_port = bpf_htons(dst ? n->p.dport : n->p.sport);
	__u16 new_port = bpf_htons(port);
	__u8 old[16];

	if (dst)
		ic_addr_copy(old, n->p.dst);
	else
		ic_addr_copy(old, n->p.src);
	if (n->family == IC_L3_IPV4) {
		__u32 from, to;
		/* saddr at 12, daddr at 16 */
		__u32 at = n->l3off + 12 + (dst ? 4 : 0);

		__builtin_memcpy(&from, old + 12, 4);
		__builtin_memcpy(&to, addr + 12, 4);
		if (from != to) {
			if (bpf_l4_csum_replace(skb, csum_off, from, to,
						BPF_F_PSEUDO_HDR | mangled | sizeof(to)) ||
			    bpf_l3_csum_replace(skb, n->l3off + 10 /* check */, from, to,
						sizeof(to)) ||
			    bpf_skb_store_bytes(skb, at, &to, sizeof(to), 0))
				return -1;
		}
	} else {
		__u32 from[4], to[4];
		/* saddr at 8, daddr at 24 */
		__u32 at = n->l3off + 8 + (dst ? 16 : 0);
		__s64 diff;

		ic_addr_copy(from, old);
		ic_addr_copy(to, addr);
		diff = bpf_csum_diff(from, 16, to, 16, 0);
		if (bpf_l4_csum_replace(skb, csum_off, 0, diff, BPF_F_PSEUDO_HDR | mangled) ||
		    bpf_skb_store_bytes(skb, at, to, 16, 0))
			return -1;
	}
	if (old_port != new_port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port,
					mangled | sizeof(new_port)) ||
		    bpf_skb_store_bytes(skb, n->l4off + (dst ? 2 : 0), &new_port,
					sizeof(new_port), 0))
			return -1;
	}
	return 0;
}

/* Applies one direction's rewrite, counted for its rule. 0, or -1 (counted) on failure. */
static __always_inline int ic_nat_apply(struct __sk_buff *skb, const struct ic_nat_pkt *n,
					const struct ic_nat_value *v, __u64 len)
{
	__u32 slot = (v->kind == IC_NAT_SNAT ? IC_NAT_MAX_RULES : 0) +
		     (v->rule & (IC_NAT_MAX_RULES - 1));
	struct ic_counter *c;

	if (ic_nat_rewrite(skb, n, v->rewrite == IC_NAT_REWRITE_DST, v->addr, v->port)) {
		ic_fw_count(IC_FW_NAT_FAILED, len);
		return -1;
	}
	c = bpf_map_lookup_elem(&ic_nat_counters, &slot);
	if (c) {
		c->packets++;
		c->bytes += len;
	}
	ic_fw_count(IC_FW_NAT_TRANSLATED, len);
	return 0;
}

static __always_inline int ic_nat_active(void)
{
	__u32 zero = 0;
	struct ic_nat_config *c = bpf_map_lookup_elem(&ic_nat_config, &zero);

	return c && c->active;
}

/* Whether the packet may open a connection (a SYN, or any UDP datagram). */
static __always_inline int ic_nat_opens(const struct ic_fw_pkt *p)
{
	return p->proto == IC_IPPROTO_UDP ||
	       (p->tcp_flags & (IC_TCP_SYN | IC_TCP_ACK | IC_TCP_RST)) == IC_TCP_SYN;
}

/* A port forward for a new connection: its two directions, then the rewrite. */
static __always_inline int ic_nat_open_dnat(struct __sk_buff *skb, struct ic_nat_scratch *sc,
					    __u32 ifindex, const struct ic_nat_target *t,
					    __u64 len)
{
	const struct ic_fw_pkt *p = &sc->n.p;
	__u16 port = t->port ? t->port : p->dport;
	struct ic_nat_value *fwd = &sc->fwd, *back = &sc->back;
	struct ic_nat_key *k = &sc->k;
	struct ic_nat_value *old;

	__builtin_memset(fwd, 0, sizeof(*fwd));
	ic_addr_copy(fwd->addr, t->addr);
	fwd->port = port;
	fwd->rewrite = IC_NAT_REWRITE_DST;
	fwd->kind = IC_NAT_DNAT;
	fwd->rule = t->rule;
	fwd->created_ns = bpf_ktime_get_ns();
	ic_nat_ct_key(&fwd->ct, p->src, t->addr, p->sport, port, p->proto);
	*back = *fwd;
	ic_addr_copy(back->addr, p->dst);
	back->port = p->dport;
	back->rewrite = IC_NAT_REWRITE_SRC;
	back->reply = 1;
	/* The reply as the server sends it: from the target, to the client. */
	__builtin_memset(k, 0, sizeof(*k));
	ic_addr_copy(k->src, t->addr);
	ic_addr_copy(k->dst, p->src);
	k->ifindex = ifindex;
	k->sport = port;
	k->dport = p->sport;
	k->proto = p->proto;
	k->egress = 1;
	if (bpf_map_update_elem(&ic_nat_map, k, back, BPF_NOEXIST)) {
		/* The inner connection is taken: by this one (a SYN sent again after its
		 * translation was removed) or by a client that reached the same server
		 * through another address of this host. */
		old = bpf_map_lookup_elem(&ic_nat_map, k);
		if (!old || old->port != p->dport || ic_addr_cmp(old->addr, p->dst)) {
			ic_fw_count(IC_FW_NAT_FAILED, len);
			return -1;
		}
	}
	ic_nat_key_of(k, p, ifindex, 0);
	if (bpf_map_update_elem(&ic_nat_map, k, fwd, BPF_ANY)) {
		ic_fw_count(IC_FW_NAT_FAILED, len);
		return -1;
	}
	return ic_nat_apply(skb, &sc->n, fwd, len);
}

/* A source translation for a new connection: the connection's own source port if the
 * reply direction is free with it, else one of IC_NAT_PORT_TRIES others from the
 * ephemeral range; then the rewrite. */
static __always_inline int ic_nat_open_snat(struct __sk_buff *skb, struct ic_nat_scratch *sc,
					    __u32 ifindex, const struct ic_nat_target *t,
					    __u64 len)
{
	const struct ic_fw_pkt *p = &sc->n.p;
	struct ic_nat_value *fwd = &sc->fwd, *back = &sc->back;
	struct ic_nat_key *k = &sc->k;
	__u32 seed = bpf_get_prandom_u32();
	__u16 port = p->sport;
	int i, found = 0;

	__builtin_memset(back, 0, sizeof(*back));
	back->port = p->sport;
	ic_addr_copy(back->addr, p->src);
	back->rewrite = IC_NAT_REWRITE_DST;
	back->kind = IC_NAT_SNAT;
	back->rule = t->rule;
	back->reply = 1;
	back->created_ns = bpf_ktime_get_ns();
	ic_nat_ct_key(&back->ct, p->src, p->dst, p->sport, p->dport, p->proto);
	/* The reply as the peer sends it: to the new source. */
	__builtin_memset(k, 0, sizeof(*k));
	ic_addr_copy(k->src, p->dst);
	ic_addr_copy(k->dst, t->addr);
	k->ifindex = ifindex;
	k->sport = p->dport;
	k->proto = p->proto;
	for (i = 0; i < IC_NAT_PORT_TRIES; i++) {
		if (i)
			port = IC_NAT_PORT_FIRST + (seed + (__u32)i * 7919) % IC_NAT_PORT_COUNT;
		k->dport = port;
		if (!bpf_map_update_elem(&ic_nat_map, k, back, BPF_NOEXIST)) {
			found = 1;
			break;
		}
	}
	if (!found) {
		ic_fw_count(IC_FW_NAT_NO_PORT, len);
		return -1;
	}
	*fwd = *back;
	ic_addr_copy(fwd->addr, t->addr);
	fwd->port = port;
	fwd->rewrite = IC_NAT_REWRITE_SRC;
	fwd->reply = 0;
	ic_nat_key_of(k, p, ifindex, 1);
	if (bpf_map_update_elem(&ic_nat_map, k, fwd, BPF_ANY)) {
		ic_fw_count(IC_FW_NAT_FAILED, len);
		return -1;
	}
	return ic_nat_apply(skb, &sc->n, fwd, len);
}

/* NAT at ingress, before the firewall (when any NAT rule is set): the forward direction of a port forward (a new
 * one opened by a forward's SYN or first datagram), or the reply direction of a
 * source translation. 0 (rewritten or not), or -1: drop. */
static __noinline int ic_nat_in(struct __sk_buff *skb, __u32 ifindex, __u64 len)
{
	struct ic_nat_dnat_key dk = {};
	struct ic_nat_scratch *sc;
	struct ic_nat_target *t;
	struct ic_nat_value *v;

	sc = ic_nat_scratch_get();
	if (!sc || ic_nat_parse(skb, &sc->n))
		return 0;
	ic_nat_key_of(&sc->k, &sc->n.p, ifindex, 0);
	v = bpf_map_lookup_elem(&ic_nat_map, &sc->k);
	if (v) {
		if (ic_nat_apply(skb, &sc->n, v, len))
			return -1;
		if (v->kind == IC_NAT_DNAT && !v->reply)
			skb->cb[0] = IC_FW_CB_DNAT;
		return 0;
	}
	if (!ic_nat_opens(&sc->n.p))
		return 0;
	dk.ifindex = ifindex;
	dk.dport = sc->n.p.dport;
	dk.proto = sc->n.p.proto;
	dk.family = sc->n.family == IC_L3_IPV4 ? 4 : 6;
	t = bpf_map_lookup_elem(&ic_nat_dnat, &dk);
	if (!t) {
		dk.dport = 0;
		t = bpf_map_lookup_elem(&ic_nat_dnat, &dk);
	}
	if (!t)
		return 0;
	if (ic_nat_open_dnat(skb, sc, ifindex, t, len))
		return -1;
	skb->cb[0] = IC_FW_CB_DNAT;
	return 0;
}

/* NAT at egress, after the firewall passed the packet: the reply direction of a port
 * forward, or the forward direction of a source translation (a new one opened by a
 * SYN or first datagram from a translated source). 0, or -1: drop. */
static __noinline int ic_nat_out(struct __sk_buff *skb, __u32 ifindex, __u64 len)
{
	struct ic_nat_snat_key sk = {};
	struct ic_nat_scratch *sc;
	struct ic_nat_target *t;
	struct ic_nat_value *v;

	sc = ic_nat_scratch_get();
	if (!sc || ic_nat_parse(skb, &sc->n))
		return 0;
	ic_nat_key_of(&sc->k, &sc->n.p, ifindex, 1);
	v = bpf_map_lookup_elem(&ic_nat_map, &sc->k);
	if (v)
		return ic_nat_apply(skb, &sc->n, v, len);
	if (!ic_nat_opens(&sc->n.p))
		return 0;
	sk.prefixlen = 32 + 128;
	sk.ifindex = bpf_htonl(ifindex);
	ic_addr_copy(sk.addr, sc->n.p.src);
	t = bpf_map_lookup_elem(&ic_nat_snat, &sk);
	if (!t || ic_is_mapped(t->addr) != ic_is_mapped(sc->n.p.src))
		return 0;
	return ic_nat_open_snat(skb, sc, ifindex, t, len);
}

SEC("tcx/ingress")
int ic_fw_in(struct __sk_buff *skb)
{
	int v;

	if (skb->mark == IC_FW_ANSWER_MARK) {
		skb->mark = 0;
		return IC_TCX_NEXT;
	}
	/* Translated first: the firewall sees the connection as it is inside. */
	skb->cb[0] = 0;
	if (ic_nat_active() && ic_nat_in(skb, skb->ifindex, skb->len) < 0)
		return IC_TCX_DROP;
	v = ic_fw(skb, 1);
	if (v == IC_V_REJECT)
		return ic_fw_reject(skb, 1);
	return v ? IC_TCX_NEXT : IC_TCX_DROP;
}

SEC("tcx/egress")
int ic_fw_out(struct __sk_buff *skb)
{
	int v;

	if (skb->mark == IC_FW_ANSWER_MARK) {
		skb->mark = 0;
		return IC_TCX_NEXT;
	}
	skb->cb[0] = 0;
	v = ic_fw(skb, 0);
	if (v == IC_V_REJECT)
		return ic_fw_reject(skb, 0);
	if (!v)
		return IC_TCX_DROP;
	/* Translated last: the firewall saw the connection as it is inside. */
	return ic_nat_active() && ic_nat_out(skb, skb->ifindex, skb->len) < 0 ? IC_TCX_DROP
									     : IC_TCX_NEXT;
}

/* Writes the SYN-ACK for the SYN whose headers are in h over the frame (l3off: where
 * its IP header starts) and sends it back out of the interface. */
static __always_inline int ic_syn_answer(struct xdp_md *ctx, __u32 l3off, int family,
					 struct ic_syn_hdrs *h, const struct ic_syn_config *cfg,
					 __u64 len)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 seq = bpf_ntohl(h->tcp.seq);
	__u32 out[10] = {}; /* the SYN-ACK's TCP header and options */
	struct tcphdr *t = (struct tcphdr *)out;
	__u8 ipbuf[40] = {};
	__u8 macs[12];
	__u32 tcplen, iplen, sum, pseudo;
	__s64 cookie;
	int delta;

	cookie = ic_syn_gen(h, family, seq, h->mss ? h->mss : 536);
	if (cookie < 0)
		return XDP_PASS;
	t->source = h->tcp.dest;
	t->dest = h->tcp.source;
	t->seq = bpf_htonl((__u32)cookie);
	t->ack_seq = bpf_htonl(seq + 1);
	t->syn = 1;
	t->ack = 1;
	t->window = bpf_htons(IC_SYN_WINDOW);
	out[5] = bpf_htonl(IC_TCPOPT_MSS << 24 | 4 << 16 |
			   (family == IC_L3_IPV4 ? cfg->mss4 : cfg->mss6));
	if (h->ts) {
		/* Our timestamp: milliseconds, its low bits the client's options. */
		__u32 tsval = ((__u32)(bpf_ktime_get_ns() / IC_MS) & ~(__u32)(IC_SYN_TS_BITS - 1)) |
			      h->wscale | (h->sack ? IC_SYN_TS_SACK : 0);

		out[6] = bpf_htonl(h->sack ? (IC_TCPOPT_SACK_PERM << 24 | 2 << 16 |
					      IC_TCPOPT_TIMESTAMP << 8 | 10)
					   : (IC_TCPOPT_NOP << 24 | IC_TCPOPT_NOP << 16 |
					      IC_TCPOPT_TIMESTAMP << 8 | 10));
		out[7] = bpf_htonl(tsval);
		out[8] = bpf_htonl(h->tsval);
		if (h->wscale != IC_SYN_TS_WSCALE_NONE) {
			out[9] = bpf_htonl(IC_TCPOPT_NOP << 24 | IC_TCPOPT_WINDOW << 16 | 3 << 8 |
					   cfg->wscale);
			tcplen = 40;
		} else {
			tcplen = 36;
		}
	} else {
		tcplen = 24;
	}
	t->doff = tcplen / 4;

	/* Pseudo header: both addresses (their sum does not depend on the order), then the
	 * protocol and length (one word for IPv4; the same sum for IPv6's two). */
	pseudo = bpf_htonl(IC_IPPROTO_TCP << 16 | tcplen);
	if (family == IC_L3_IPV4) {
		struct iphdr *ip = (struct iphdr *)ipbuf;

		iplen = 20;
		sum = ic_csum_add(&h->ip4.saddr, 8, 0);
		ip->version = 4;
		ip->ihl = 5;
		ip->tot_len = bpf_htons(20 + tcplen);
		ip->frag_off = bpf_htons(0x4000); /* DF */
		ip->ttl = 64;
		ip->protocol = IC_IPPROTO_TCP;
		ip->saddr = h->ip4.daddr;
		ip->daddr = h->ip4.saddr;
		ip->check = ic_csum_fold(ic_csum_add(ip, 20, 0));
	} else {
		struct ipv6hdr *ip6 = (struct ipv6hdr *)ipbuf;

		iplen = 40;
		sum = ic_csum_add(&h->ip6.saddr, 32, 0);
		ip6->version = 6;
		ip6->payload_len = bpf_htons(tcplen);
		ip6->nexthdr = IC_IPPROTO_TCP;
		ip6->hop_limit = 64;
		ip6->saddr = h->ip6.daddr;
		ip6->daddr = h->ip6.saddr;
	}
	sum = ic_csum_add(&pseudo, 4, sum);
	sum = ic_csum_add(out, tcplen, sum);
	t->check = ic_csum_fold(sum);

	if (data + 12 > data_end)
		return XDP_PASS;
	__builtin_memcpy(macs, data + 6, 6);
	__builtin_memcpy(macs + 6, data, 6);
	delta = (int)(l3off + iplen + tcplen) - (int)(data_end - data);
	if (delta && bpf_xdp_adjust_tail(ctx, delta))
		return XDP_PASS;
	/* From here the frame is being rewritten: a failure drops it. */
	if (bpf_xdp_store_bytes(ctx, 0, macs, 12) ||
	    bpf_xdp_store_bytes(ctx, l3off, ipbuf, iplen) ||
	    bpf_xdp_store_bytes(ctx, l3off + iplen, out, tcplen))
		return XDP_DROP;
	ic_fw_count(IC_FW_SYN_COOKIES, len);
	return XDP_TX;
}

/* SYN-flood defence on an interface's XDP hook: answers SYNs to protected ports with a
 * cookie (always, or under_attack while the SYN rate is over the threshold), when the
 * rules would accept the connection. Everything else passes to the tcx programs:
 * other packets, SYNs the rules refuse (dropped or rejected there, with their counters
 * and events), SYNs of a tuple the table already tracks, and everything in dry-run or
 * without connection tracking. */
SEC("xdp")
int ic_fw_syn(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ic_l3_info info = {};
	struct ic_syn_hdrs *h;
	struct ic_fw_pkt p = {};
	struct ic_ct_key key;
	struct ic_fw_config *fw;
	struct ic_syn_config *cfg;
	struct ic_fw_rule *rule;
	struct tcphdr *tcp;
	__u32 zero = 0, l3off;
	int family;

	if (!ic_syn_supported())
		return XDP_PASS;
	family = ic_parse_l2(data, data_end, &info);
	if (family == IC_L3_IPV4) {
		struct iphdr *ip = info.l3;

		if (ip->protocol != IC_IPPROTO_TCP || ip->ihl != 5 ||
		    (ip->frag_off & bpf_htons(0x3fff)))
			return XDP_PASS;
		tcp = (void *)(ip + 1);
		ic_v4_mapped(p.src, ip->saddr);
		ic_v4_mapped(p.dst, ip->daddr);
	} else if (family == IC_L3_IPV6) {
		struct ipv6hdr *ip6 = info.l3;

		if (ip6->nexthdr != IC_IPPROTO_TCP)
			return XDP_PASS;
		tcp = (void *)(ip6 + 1);
		__builtin_memcpy(p.src, &ip6->saddr, 16);
		__builtin_memcpy(p.dst, &ip6->daddr, 16);
	} else {
		return XDP_PASS;
	}
	if ((void *)(tcp + 1) > data_end)
		return XDP_PASS;
	if ((((__u8 *)tcp)[13] & (IC_TCP_SYN | IC_TCP_ACK | IC_TCP_RST | IC_TCP_FIN)) != IC_TCP_SYN)
		return XDP_PASS;
	p.sport = bpf_ntohs(tcp->source);
	p.dport = bpf_ntohs(tcp->dest);
	p.proto = IC_IPPROTO_TCP;
	p.tcp_flags = IC_TCP_SYN;
	if (!ic_syn_protected(p.dport))
		return XDP_PASS;
	cfg = bpf_map_lookup_elem(&ic_fw_syn_config, &zero);
	fw = bpf_map_lookup_elem(&ic_fw_config, &zero);
	if (!cfg || !fw || cfg->mode == IC_SYN_OFF || !(fw->flags & IC_FW_F_STATEFUL) ||
	    (fw->flags & IC_FW_F_DRY_RUN))
		return XDP_PASS;
	if (cfg->mode == IC_SYN_UNDER_ATTACK && !ic_syn_under_attack(cfg))
		return XDP_PASS;
	ic_ct_make_key(&key, p.src, p.dst, p.sport, p.dport, IC_IPPROTO_TCP);
	if (bpf_map_lookup_elem(&ic_fw_ct, &key))
		return XDP_PASS;
	rule = ic_fw_classify(fw->slot & 1, ic_fw_bucket(1, IC_IPPROTO_TCP), &p);
	if (rule ? rule->action != IC_FW_ACCEPT : !!(fw->flags & IC_FW_F_DROP_IN))
		return XDP_PASS;
	l3off = (__u32)(info.l3 - data);
	h = ic_syn_scratch();
	if (!h || IC_SYN_LOAD(bpf_xdp_load_bytes, ctx, l3off, family, h) < 0)
		return XDP_PASS;
	ic_tcp_options(h);
	return ic_syn_answer(ctx, l3off, family, h, cfg, data_end - data);
}

/* Socket families (linux/socket.h; vmlinux.h has no macros). */
#define IC_AF_INET 2
#define IC_AF_INET6 10

/* The process that accepted an inbound TCP connection. inet_accept() joins the new
 * socket to the accept()ing process's socket (sock_graft) in that process's own
 * context, and sock_graft calls the LSM hook security_sock_graft, a function whose
 * signature (sock, socket) has not changed since it was added, unlike
 * inet_csk_accept's and inet_accept's (6.10). The connection's entry takes the
 * process's pid and cgroup, which its end record and the connection table then name;
 * its start record was written with its first packet, before any process accepted it.
 * A kernel thread's accept (an in-kernel server) names no process. Read with BTF (no
 * bpf_probe_read_kernel, which lockdown refuses). */
SEC("fentry/security_sock_graft")
int BPF_PROG(ic_fw_accept, struct sock *sk, struct socket *parent)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u8 local[16], remote[16];
	struct ic_ct_entry *e;
	struct ic_ct_key key;
	__u16 family;

	if (!sk || !task || (task->flags & IC_PF_KTHREAD) || sk->sk_protocol != IC_IPPROTO_TCP)
		return 0;
	family = sk->__sk_common.skc_family;
	if (family == IC_AF_INET) {
		ic_v4_mapped(local, sk->__sk_common.skc_rcv_saddr);
		ic_v4_mapped(remote, sk->__sk_common.skc_daddr);
	} else if (family == IC_AF_INET6) {
		__u32 word;

		/* Word by word: each is one load the verifier checks against the BTF. */
#define IC_COPY_WORD(i)                                                                  \
	word = sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[i];                      \
	__builtin_memcpy(local + 4 * (i), &word, 4);                                     \
	word = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[i];                          \
	__builtin_memcpy(remote + 4 * (i), &word, 4);
		IC_COPY_WORD(0)
		IC_COPY_WORD(1)
		IC_COPY_WORD(2)
		IC_COPY_WORD(3)
#undef IC_COPY_WORD
	} else {
		return 0;
	}
	ic_ct_make_key(&key, remote, local, bpf_ntohs(sk->__sk_common.skc_dport),
		       sk->__sk_common.skc_num, IC_IPPROTO_TCP);
	e = bpf_map_lookup_elem(&ic_fw_ct, &key);
	if (!e || !(e->flags & IC_CT_F_INBOUND) || e->pid)
		return 0;
	e->pid = task->tgid;
	e->cgroup_id = bpf_get_current_cgroup_id();
	return 0;
}
