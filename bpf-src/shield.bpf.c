// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * shield.bpf.c - XDP source-address firewall.
 *
 * Order of decisions for every IPv4/IPv6 packet:
 *   1. source in the management safety valve  -> XDP_PASS (always, counted as valve);
 *   2. longest matching prefix among the rules of the active policy slot (IPv4: the
 *      compiled DIR-24-8 fast path, which also holds the valve, or the LPM trie;
 *      IPv6: the compiled bitmap trie, which also holds the valve, or the LPM trie):
 *        deny  -> XDP_DROP (dry-run: XDP_PASS, counted as would-drop),
 *        allow -> continue (an exception inside a denied range: longest prefix wins);
 *   3. per-source token bucket, if configured: over the limit -> XDP_DROP (dry-run: pass);
 *   4. XDP_PASS.
 * Non-IP frames pass; malformed/truncated frames pass and are counted. Drops (and
 * would-drops) are sampled 1-in-N into a ring buffer with addresses, ports and rule.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "ironclad.h"
#include "parse.h"
#include "tokens.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define IC_NS 1000000000LL

/*
 * Rules live in per-slot tables (arrays of maps with IC_SHIELD_SLOTS slots). User space
 * builds a whole policy into the slot packets do not use, then flips ic_shield_active:
 * every packet reads the active word once and takes all its lookups from that slot.
 */
struct ic_v4_fast_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, IC_SHIELD_V4_BLOCKS);
	__type(key, __u32);
	__type(value, struct ic_v4_block);
};

struct ic_v4_trie_inner {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_SHIELD_MAX_V4_PREFIXES);
	__type(key, struct ic_lpm_v4_key);
	__type(value, struct ic_rule);
};

struct ic_v6_trie_inner {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_SHIELD_MAX_V6_PREFIXES);
	__type(key, struct ic_lpm_v6_key);
	__type(value, struct ic_rule);
};

/* User space only: the IPv4 prefixes a fast-path slot was compiled from (sized per
 * policy, hence BPF_F_INNER_MAP). */
struct ic_v4_book_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ic_book_page);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, IC_SHIELD_SLOTS);
	__type(key, __u32);
	__array(values, struct ic_v4_fast_inner);
} ic_v4_fast SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, IC_SHIELD_SLOTS);
	__type(key, __u32);
	__array(values, struct ic_v4_trie_inner);
} ic_v4_trie SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, IC_SHIELD_SLOTS);
	__type(key, __u32);
	__array(values, struct ic_v6_trie_inner);
} ic_v6_trie SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, IC_SHIELD_SLOTS);
	__type(key, __u32);
	__array(values, struct ic_v4_book_inner);
} ic_v4_book SEC(".maps");

/* The IPv6 fast path of a slot: first level, nodes and leaves in one fixed-size array
 * (inlined reads, and one table to put into a slot). */
struct ic_v6_fast_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, IC_SHIELD_V6_RECORDS);
	__type(key, __u32);
	__type(value, struct ic_v6_node);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, IC_SHIELD_SLOTS);
	__type(key, __u32);
	__array(values, struct ic_v6_fast_inner);
} ic_v6_fast SEC(".maps");

/* User space only: the IPv6 prefixes a fast-path slot was compiled from. */
struct ic_v6_book_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ic_book_page);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, IC_SHIELD_SLOTS);
	__type(key, __u32);
	__array(values, struct ic_v6_book_inner);
} ic_v6_book SEC(".maps");

/* The span nodes of a fast-path slot. Not sized per policy (BPF_F_INNER_MAP): the
 * verifier inlines lookups only into arrays of the template's size, and a call per span
 * read cost 8 ns on the drop path of a host feed. */
struct ic_v4_span_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, IC_SHIELD_V4_SPANS);
	__type(key, __u32);
	__type(value, struct ic_v4_span);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, IC_SHIELD_SLOTS);
	__type(key, __u32);
	__array(values, struct ic_v4_span_inner);
} ic_v4_spans SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} ic_shield_active SEC(".maps");

/* User space only: what each rule id stands for. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, IC_SHIELD_MAX_RULES);
	__type(key, __u32);
	__type(value, struct ic_rule_info);
} ic_rule_info SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_SHIELD_MAX_VALVE_PREFIXES);
	__type(key, struct ic_lpm_v4_key);
	__type(value, __u32);
} ic_valve_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_SHIELD_MAX_VALVE_PREFIXES);
	__type(key, struct ic_lpm_v6_key);
	__type(value, __u32);
} ic_valve_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IC_SHIELD_MAX_RULES);
	__type(key, __u32);
	__type(value, struct ic_counter);
} ic_rule_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IC_TOTAL_COUNT);
	__type(key, __u32);
	__type(value, struct ic_total);
} ic_totals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ic_shield_config);
} ic_shield_config SEC(".maps");

/* Kernel-private: per-source token bucket (tokens in nano-packets). */
struct ic_rate_key {
	__u8 addr[16];
};

struct ic_rate_bucket {
	__s64 tokens;
	__u64 last_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, IC_SHIELD_RATE_SOURCES);
	__type(key, struct ic_rate_key);
	__type(value, struct ic_rate_bucket);
} ic_rate_buckets SEC(".maps");

/* Kernel-private, per CPU: the events reported in the current one-second window (the
 * events_per_sec budget). The 1-in-N countdowns are in the totals (struct ic_total). */
struct ic_sample_state {
	__u32 events;
	__u32 _pad0;
	__u64 window_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ic_sample_state);
} ic_sample_seq SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, IC_SHIELD_RING_BYTES);
} ic_shield_events SEC(".maps");

/* Wake-ups of the event reader: at most one every IC_SHIELD_WAKE_NS, and one whenever a
 * quarter of the ring is waiting. A wake-up per sampled drop (the ring buffer's default
 * whenever its reader has caught up, which a live reader always has) costs the dropping
 * CPU an irq_work and the reader a context switch: several microseconds, paid on the
 * drop path under the flood the Shield exists for. The first drop after a quiet spell
 * still wakes the reader at once; what follows it within the interval waits for the
 * next wake-up or for the reader's own drain (EventReader::poll drains after every
 * wait, the daemon every 100 ms). */
#define IC_SHIELD_WAKE_NS (50 * 1000 * 1000ULL)
#define IC_SHIELD_WAKE_BYTES (IC_SHIELD_RING_BYTES / 4)

/* When a drop last woke the reader (any CPU: a racy read and write, at worst one wake-up
 * more). Not a map of its own: the object's .bss, never pinned, zero after a load. */
__u64 ic_shield_last_wake_ns = 0;

/* Keep the ABI types in BTF so user space can check its mirrors against them. */
const volatile enum ic_abi ic_abi_version = IC_ABI_VERSION;
const volatile enum ic_action ic_abi_action = IC_ACTION_NONE;
const volatile enum ic_shield_total ic_abi_total = IC_TOTAL_COUNT;
const volatile enum ic_shield_flags ic_abi_flags = IC_SHIELD_F_DRY_RUN;
const volatile enum ic_shield_limits ic_abi_limits = IC_SHIELD_MAX_RULES;
const volatile enum ic_event_kind ic_abi_event_kind = IC_EVENT_SHIELD;
const volatile enum ic_shield_verdict ic_abi_verdict = IC_VERDICT_DROP;
const volatile enum ic_shield_ring ic_abi_ring = IC_SHIELD_RING_BYTES;
const volatile struct ic_shield_event ic_abi_shield_event;
const volatile enum ic_fast_entry ic_abi_fast_entry = IC_FAST_GROUP;
const volatile enum ic_shield_active_bits ic_abi_active = IC_ACTIVE_SLOT;
const volatile enum ic_rule_kind ic_abi_rule_kind = IC_RULE_FREE;
const volatile struct ic_v4_block ic_abi_v4_block;
const volatile struct ic_v4_span ic_abi_v4_span;
const volatile struct ic_book_run ic_abi_book_run;
const volatile struct ic_book_page ic_abi_book_page;
const volatile enum ic_book ic_abi_book = IC_BOOK_PAGE_BYTES;
const volatile struct ic_v6_node ic_abi_v6_node;
const volatile enum ic_v6_fast ic_abi_v6_fast = IC_V6_NODE;
const volatile struct ic_rule_info ic_abi_rule_info;
const volatile struct ic_rule ic_abi_rule;
const volatile struct ic_lpm_v4_key ic_abi_lpm_v4_key;
const volatile struct ic_lpm_v6_key ic_abi_lpm_v6_key;

/* One parsed packet. Addresses are read from the header only when needed (events, the
 * rate limiter), so the common path copies nothing. */
struct ic_pkt {
	void *l3;
	void *data_end;
	__u64 len;
	__u8 family;
};

/* The packet's source and destination as 16 bytes each (IPv4 as IPv4-mapped), for a
 * packet of `family`. */
static __always_inline void ic_addrs(struct ic_pkt *pkt, __u8 family, __u8 *src, __u8 *dst)
{
	if (family == 4) {
		struct iphdr *ip = pkt->l3;

		if ((void *)(ip + 1) > pkt->data_end)
			return;
		__builtin_memset(src, 0, 10);
		__builtin_memset(dst, 0, 10);
		src[10] = 0xff;
		src[11] = 0xff;
		dst[10] = 0xff;
		dst[11] = 0xff;
		__builtin_memcpy(&src[12], &ip->saddr, 4);
		__builtin_memcpy(&dst[12], &ip->daddr, 4);
	} else {
		struct ipv6hdr *ip6 = pkt->l3;

		if ((void *)(ip6 + 1) > pkt->data_end)
			return;
		__builtin_memcpy(src, &ip6->saddr, 16);
		__builtin_memcpy(dst, &ip6->daddr, 16);
	}
}

/* Counts one packet in a counter map (struct ic_counter values, or struct ic_total, which
 * starts with the same two fields). */
static __always_inline void ic_count(void *map, __u32 index, __u64 bytes)
{
	struct ic_counter *c = bpf_map_lookup_elem(map, &index);

	if (c) {
		c->packets += 1;
		c->bytes += bytes;
	}
}

static __always_inline struct ic_shield_config *ic_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&ic_shield_config, &zero);
}

/* Reports a sampled drop, within the events_per_sec budget. Not inlined: the drop path
 * only pays for it once per sample_rate drops, and its stack and spills stay off that
 * path. The budget is what keeps a flood cheap: at 20 Mpps, 1-in-64 alone would reserve,
 * fill and submit 300k events a second, about 100 ns each with a live reader; over budget,
 * a sampled drop costs one clock read and is counted instead. */
static __noinline void ic_emit(struct xdp_md *ctx, struct ic_shield_config *cfg,
			       struct ic_pkt *pkt, __u32 rule_id, __u8 verdict)
{
	struct ic_sample_state *st;
	struct ic_shield_event *e;
	struct ic_l4 l4 = {};
	__u64 now = bpf_ktime_get_ns();
	__u32 zero = 0;

	st = bpf_map_lookup_elem(&ic_sample_seq, &zero);
	if (!cfg || !st)
		return;
	if (cfg->events_per_sec) {
		if (now - st->window_ns >= IC_NS) {
			st->window_ns = now;
			st->events = 0;
		}
		if (st->events >= cfg->events_per_sec) {
			ic_count(&ic_totals, IC_TOTAL_EVENTS_OVER_BUDGET, 0);
			return;
		}
		st->events += 1;
	}
	/* The family from the header's own version nibble, not from pkt->family. The
	 * verifiers of Linux 6.1 and 5.10 (Debian's) took this subprogram's walk for an
	 * IPv6 drop as equal to the one for an IPv4 drop (the constant the caller stored
	 * in pkt->family was not tracked as one that decides a branch) and removed the
	 * IPv6 branch as dead code: IPv6 events carried the header read as IPv4
	 * (`::ffff:11.173.0.0` for 2001:db8:bad::5, in shield_prog_run on both guests).
	 * A byte of the packet is unknown to any verifier: both branches stay. */
	__u8 *l3 = pkt->l3;
	__u8 family;

	if ((void *)(l3 + 1) > pkt->data_end)
		return;
	family = *l3 >> 4 == 4 ? 4 : 6;
	e = bpf_ringbuf_reserve(&ic_shield_events, sizeof(*e), 0);
	if (!e) {
		ic_count(&ic_totals, IC_TOTAL_EVENTS_LOST, 0);
		return;
	}
	if (family == 4)
		ic_parse_l4_v4(pkt->l3, pkt->data_end, &l4);
	else
		ic_parse_l4_v6(pkt->l3, pkt->data_end, &l4);
	e->hdr.version = IC_ABI_VERSION;
	e->hdr.kind = IC_EVENT_SHIELD;
	e->hdr.size = sizeof(*e);
	e->hdr.ktime_ns = now;
	__builtin_memset(e->src, 0, sizeof(e->src));
	__builtin_memset(e->dst, 0, sizeof(e->dst));
	ic_addrs(pkt, family, e->src, e->dst);
	e->rule_id = rule_id;
	e->ifindex = ctx->ingress_ifindex;
	e->pkt_len = pkt->len;
	e->sport = l4.sport;
	e->dport = l4.dport;
	e->family = family;
	e->proto = l4.proto;
	e->verdict = verdict;
	__builtin_memset(e->_pad0, 0, sizeof(e->_pad0));
	if (e->hdr.ktime_ns - ic_shield_last_wake_ns >= IC_SHIELD_WAKE_NS ||
	    bpf_ringbuf_query(&ic_shield_events, BPF_RB_AVAIL_DATA) >= IC_SHIELD_WAKE_BYTES) {
		ic_shield_last_wake_ns = e->hdr.ktime_ns;
		bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	} else {
		bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	}
}

/* Counts a packet in the total `which` (dropped, would-drop or rate-limited) and samples
 * one in sample_rate of them per CPU for ic_emit. The countdown is in the total's own value
 * and the rate in the active word, so between samples a drop reads nothing else: a
 * separate countdown map and the configuration's lookup cost about 2 ns a drop. A countdown
 * rather than a modulo: no division on the drop path. A countdown left above the rate (the
 * rate was lowered) restarts from the rate. */
static __always_inline void ic_count_report(struct xdp_md *ctx, struct ic_pkt *pkt, __u32 active,
					    __u32 which, __u32 rule_id, __u8 verdict)
{
	struct ic_total *t = bpf_map_lookup_elem(&ic_totals, &which);
	__u32 rate = active >> IC_ACTIVE_SAMPLE_SHIFT;
	__u32 n;

	if (!t)
		return;
	t->packets += 1;
	t->bytes += pkt->len;
	if (!rate)
		return;
	n = t->countdown;
	if (n >= rate)
		n = rate - 1;
	if (n) {
		t->countdown = n - 1;
		return;
	}
	t->countdown = rate - 1;
	ic_emit(ctx, ic_config(), pkt, rule_id, verdict);
}

/* Token bucket per source. Returns 1 when the packet is over the limit. */
static __always_inline int ic_over_limit(struct ic_shield_config *cfg, struct ic_pkt *pkt)
{
	struct ic_rate_bucket *bucket;
	struct ic_rate_key key = {};
	__u8 dst[16];
	__s64 cap;
	__u64 now;

	if (!cfg || !cfg->rate_pps)
		return 0;
	ic_addrs(pkt, pkt->family, key.addr, dst);
	now = bpf_ktime_get_ns();
	cap = (__s64)cfg->rate_burst * IC_NS;
	bucket = bpf_map_lookup_elem(&ic_rate_buckets, &key);
	if (!bucket) {
		struct ic_rate_bucket fresh = { .tokens = cap - IC_NS, .last_ns = now };

		if (cap < IC_NS)
			return 1;
		bpf_map_update_elem(&ic_rate_buckets, &key, &fresh, BPF_NOEXIST);
		return 0;
	}
	return !ic_tokens_take(&bucket->tokens, &bucket->last_ns, cfg->rate_pps, cap, now);
}

static __always_inline __u32 ic_active(void)
{
	__u32 zero = 0;
	__u32 *active = bpf_map_lookup_elem(&ic_shield_active, &zero);

	return active ? *active : 0;
}

/* Whether `last` is inside the run pair[0]..=pair[1] (a runs node's second record). */
static __always_inline int ic_span_pair(__u8 last, const __u8 *pair)
{
	return (__u8)(last - pair[0]) <= (__u8)(pair[1] - pair[0]);
}

/* A span node's value for the last octet `last`. */
static __always_inline __u16 ic_span_value(__u32 slot, __u32 index, __u8 last)
{
	struct ic_v4_span *span;
	void *spans = bpf_map_lookup_elem(&ic_v4_spans, &slot);

	if (!spans)
		return 0;
	span = bpf_map_lookup_elem(spans, &index);
	if (!span)
		return 0;
	if (span->lo[0] > span->hi[0]) {
		__u32 at, i;
		__u64 *bits;
		__u16 *more;

		if (span->lo[0] == 3) {
			/* A runs node: up to five runs, the first in this record (lo[1],
			 * hi[1]), the others as (first, last) byte pairs in the next. */
			__u8 *pairs;

			at = index + 1;
			pairs = bpf_map_lookup_elem(spans, &at);
			if (!pairs)
				return 0;
			if ((__u8)(last - span->lo[1]) <= (__u8)(span->hi[1] - span->lo[1]) ||
			    ic_span_pair(last, pairs) || ic_span_pair(last, pairs + 2) ||
			    ic_span_pair(last, pairs + 4) || ic_span_pair(last, pairs + 6))
				return span->inner;
			return span->outer;
		}
		if (span->lo[0] == 1) {
			/* A bitmap node: the address's bit in the words after the header. */
			at = index + 1 + (last >> 6);
			bits = bpf_map_lookup_elem(spans, &at);
			if (!bits)
				return 0;
			return (*bits >> (last & 63)) & 1 ? span->inner : span->outer;
		}
		if (span->lo[0] == 2) {
			/* A quad node: the address's 2-bit index in the words after the two
			 * header records; entries 2 and 3 are in the second of them. */
			at = index + 2 + (last >> 5);
			bits = bpf_map_lookup_elem(spans, &at);
			if (!bits)
				return 0;
			i = (*bits >> ((last & 31) * 2)) & 3;
			if (i < 2)
				return i ? span->outer : span->inner;
			at = index + 1;
			more = bpf_map_lookup_elem(spans, &at);
			if (!more)
				return 0;
			return more[i & 1];
		}
		/* A leaf node: the address's entry, four to a record, from the distance the
		 * header gives. */
		at = index + ((__u32)span->outer << 16 | span->inner) + (last >> 2);
		more = bpf_map_lookup_elem(spans, &at);
		if (!more)
			return 0;
		return more[last & 3];
	}
	/* lo <= last <= hi in one unsigned comparison each (lo <= hi always in a span). */
	if ((__u8)(last - span->lo[0]) <= (__u8)(span->hi[0] - span->lo[0]) ||
	    (__u8)(last - span->lo[1]) <= (__u8)(span->hi[1] - span->lo[1]))
		return span->inner;
	return span->outer;
}

/* The IPv4 fast path: one array lookup, a second for a /24 that holds longer prefixes (a
 * group, or a span node). Returns the entry (0: no rule). */
static __always_inline __u16 ic_fast_lookup(void *table, __u32 slot, __u32 saddr_host)
{
	struct ic_v4_block *block;
	__u32 index = saddr_host >> 16;
	__u16 entry;

	block = bpf_map_lookup_elem(table, &index);
	if (!block)
		return 0;
	entry = block->entry[(saddr_host >> 8) & 0xff];
	if (!(entry & IC_FAST_GROUP))
		return entry;
	if (entry & IC_FAST_SPAN) {
		__u32 base = (entry & IC_FAST_SPAN_BASE) ? block->span_base[1] : block->span_base[0];

		return ic_span_value(slot, base + (entry & IC_FAST_SPAN_MASK), saddr_host & 0xff);
	}
	index = IC_SHIELD_V4_FIRST_BLOCKS + (entry & IC_FAST_GROUP_MASK);
	block = bpf_map_lookup_elem(table, &index);
	if (!block)
		return 0;
	return block->entry[saddr_host & 0xff];
}

/* 64 bits of an IPv6 address in host order from two of its 32-bit words (two aligned
 * word loads: a byte-wise copy of the packet's bytes costs a dozen instructions more). */
static __always_inline __u64 ic_v6_half(const struct in6_addr *a, int second)
{
	__u32 w0 = a->in6_u.u6_addr32[second ? 2 : 0];
	__u32 w1 = a->in6_u.u6_addr32[second ? 3 : 1];

	return (__u64)bpf_ntohl(w0) << 32 | bpf_ntohl(w1);
}

/* The 6-bit stride of a 128-bit address (hi: host order; the low half read when the
 * stride lies there) that starts at bit `depth` (16, 22, ..., 124; the last one padded
 * with two zero bits). */
static __always_inline __u32 ic_v6_stride(__u64 hi, const struct in6_addr *a, __u32 depth)
{
	if (depth < 64)
		return (hi >> (58 - depth)) & 0x3f;
	if (depth < 124)
		return (ic_v6_half(a, 1) >> (122 - depth)) & 0x3f;
	return (ic_v6_half(a, 1) << 2) & 0x3f;
}

/* A lone node's entry for the address (hi: its high half, host order). */
static __always_inline __u16 ic_v6_lone(struct ic_v6_node *node, __u64 hi,
					const struct in6_addr *a)
{
	__u32 len = node->base[0] & IC_V6_LEN_MASK;
	int inside;

	if (len <= 64)
		inside = len == 0 || ((hi ^ node->bits[0]) >> (64 - len)) == 0;
	else
		inside = hi == node->bits[0] &&
			 ((ic_v6_half(a, 1) ^ node->bits[1]) >> (128 - len)) == 0;
	return inside ? node->base[1] & 0xffff : node->base[1] >> 16;
}

/* The IPv6 fast path: the first-level entry of the address's /22 (inside 2000::/3) or /16
 * (elsewhere), then one record per 6-bit stride until a leaf or a lone prefix (see enum
 * ic_v6_fast). Returns the entry (0: no rule). The walk is unrolled: every stride's shift
 * is a constant. */
static __always_inline __u16 ic_v6_fast_lookup(void *table, const struct in6_addr *saddr)
{
	struct ic_v6_node *node;
	__u64 hi = ic_v6_half(saddr, 0);
	__u32 index, entry, depth;
	int global = (hi >> 61) == 1;
	__u64 top, at;

	top = global ? (hi >> 42) & (IC_V6_GLOBAL_TOPS - 1) : IC_V6_GLOBAL_TOPS + (hi >> 48);
	/* top / 6 without a division: exact for every top below 2^20 (checked in
	 * ironclad-policy's fastpath6 tests). */
	index = (top * 699051) >> 22;
	at = top - (__u64)index * IC_V6_TOPS_PER_RECORD;
	/* The check and the access on one register. */
	barrier_var(at);
	if (at >= IC_V6_TOPS_PER_RECORD)
		return 0;
	node = bpf_map_lookup_elem(table, &index);
	if (!node)
		return 0;
	entry = ((__u32 *)node)[at];
	if (!(entry & IC_V6_NODE))
		return entry;
	index = entry & IC_V6_INDEX_MASK;
#pragma unroll
	for (depth = IC_V6_TOP_BITS; depth < 128; depth += IC_V6_STRIDE) {
		__u64 mask;
		__u32 v;

		/* A /22's node starts at the second stride. */
		if (depth < IC_V6_GLOBAL_BITS && global)
			continue;
		node = bpf_map_lookup_elem(table, &index);
		if (!node)
			return 0;
		if (node->base[0] & IC_V6_LONE)
			return ic_v6_lone(node, hi, saddr);
		v = ic_v6_stride(hi, saddr, depth);
		/* Bits 0..=v (v = 63: all of them). */
		mask = (2ULL << v) - 1;
		if (node->bits[0] & (1ULL << v)) {
			index = node->base[0] + __builtin_popcountll(node->bits[0] & mask) - 1;
			continue;
		}
		entry = node->base[1] + __builtin_popcountll(node->bits[1] & mask) - 1;
		index = entry / IC_V6_LEAVES_PER_RECORD;
		node = bpf_map_lookup_elem(table, &index);
		if (!node)
			return 0;
		return ((__u16 *)node)[entry % IC_V6_LEAVES_PER_RECORD];
	}
	return 0;
}

static __always_inline int ic_decide(struct xdp_md *ctx, struct ic_pkt *pkt, struct ic_rule *rule,
				     __u32 active)
{
	int dry_run = active & IC_ACTIVE_DRY_RUN;

	/* The common case, no rule and no rate limit, reads nothing more. */
	if (!rule && !(active & IC_ACTIVE_RATE_LIMIT)) {
		ic_count(&ic_totals, IC_TOTAL_PASSED, pkt->len);
		return XDP_PASS;
	}
	if (rule)
		ic_count(&ic_rule_counters, rule->rule_id, pkt->len);
	if (rule && rule->action == IC_ACTION_DENY) {
		if (dry_run) {
			ic_count(&ic_totals, IC_TOTAL_PASSED, pkt->len);
			ic_count_report(ctx, pkt, active, IC_TOTAL_WOULD_DROP, rule->rule_id,
					IC_VERDICT_WOULD_DROP);
			return XDP_PASS;
		}
		ic_count_report(ctx, pkt, active, IC_TOTAL_DROPPED, rule->rule_id, IC_VERDICT_DROP);
		return XDP_DROP;
	}
	if ((active & IC_ACTIVE_RATE_LIMIT) && ic_over_limit(ic_config(), pkt)) {
		if (dry_run) {
			ic_count(&ic_totals, IC_TOTAL_RATE_LIMITED, pkt->len);
			ic_count(&ic_totals, IC_TOTAL_PASSED, pkt->len);
			ic_count_report(ctx, pkt, active, IC_TOTAL_WOULD_DROP, 0,
					IC_VERDICT_WOULD_RATE_LIMIT);
			return XDP_PASS;
		}
		ic_count_report(ctx, pkt, active, IC_TOTAL_RATE_LIMITED, 0, IC_VERDICT_RATE_LIMITED);
		return XDP_DROP;
	}
	ic_count(&ic_totals, IC_TOTAL_PASSED, pkt->len);
	return XDP_PASS;
}

SEC("xdp")
int ic_shield_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ic_pkt pkt = { .data_end = data_end, .len = data_end - data };
	struct ic_l3_info info = {};
	int l3 = ic_parse_l2(data, data_end, &info);

	pkt.l3 = info.l3;
	if (l3 == IC_L3_MALFORMED) {
		ic_count(&ic_totals, IC_TOTAL_MALFORMED, pkt.len);
		return XDP_PASS;
	}
	if (l3 == IC_L3_IPV4) {
		struct iphdr *ip = info.l3;
		struct ic_lpm_v4_key key = { .prefixlen = 32 };
		struct ic_rule fast_rule = {};
		struct ic_rule *rule = NULL;
		__u32 active = ic_active();
		__u32 slot = active & IC_ACTIVE_SLOT;
		void *table;

		if ((void *)(ip + 1) > data_end)
			return XDP_PASS;
		pkt.family = 4;
		if (!(active & IC_ACTIVE_V4_TRIE)) {
			/* The valve is compiled into the fast path (IC_FAST_VALVE). */
			__u16 entry = 0;

			table = bpf_map_lookup_elem(&ic_v4_fast, &slot);
			if (table)
				entry = ic_fast_lookup(table, slot, bpf_ntohl(ip->saddr));
			if (entry == IC_FAST_VALVE) {
				ic_count(&ic_totals, IC_TOTAL_VALVE, pkt.len);
				return XDP_PASS;
			}
			if (entry & IC_FAST_RULE_MASK) {
				fast_rule.rule_id = entry & IC_FAST_RULE_MASK;
				fast_rule.action = (entry & IC_FAST_ALLOW) ? IC_ACTION_ALLOW : IC_ACTION_DENY;
				rule = &fast_rule;
			}
			return ic_decide(ctx, &pkt, rule, active);
		}
		__builtin_memcpy(key.addr, &ip->saddr, sizeof(key.addr));
		if (bpf_map_lookup_elem(&ic_valve_v4, &key)) {
			ic_count(&ic_totals, IC_TOTAL_VALVE, pkt.len);
			return XDP_PASS;
		}
		table = bpf_map_lookup_elem(&ic_v4_trie, &slot);
		if (table)
			rule = bpf_map_lookup_elem(table, &key);
		return ic_decide(ctx, &pkt, rule, active);
	}
	if (l3 == IC_L3_IPV6) {
		struct ipv6hdr *ip6 = info.l3;
		struct ic_lpm_v6_key key = { .prefixlen = 128 };
		__u32 active, slot;
		void *table;

		if ((void *)(ip6 + 1) > data_end)
			return XDP_PASS;
		active = ic_active();
		slot = active & IC_ACTIVE_SLOT;
		if (active & IC_ACTIVE_V6_FAST) {
			/* The valve is compiled into the fast path (IC_FAST_VALVE). */
			struct ic_rule fast_rule = {};
			struct ic_rule *rule = NULL;
			__u16 entry = 0;

			pkt.family = 6;
			table = bpf_map_lookup_elem(&ic_v6_fast, &slot);
			if (table)
				entry = ic_v6_fast_lookup(table, &ip6->saddr);
			if (entry == IC_FAST_VALVE) {
				ic_count(&ic_totals, IC_TOTAL_VALVE, pkt.len);
				return XDP_PASS;
			}
			if (entry & IC_FAST_RULE_MASK) {
				fast_rule.rule_id = entry & IC_FAST_RULE_MASK;
				fast_rule.action = (entry & IC_FAST_ALLOW) ? IC_ACTION_ALLOW : IC_ACTION_DENY;
				rule = &fast_rule;
			}
			return ic_decide(ctx, &pkt, rule, active);
		}
		__builtin_memcpy(key.addr, &ip6->saddr, sizeof(key.addr));
		if (bpf_map_lookup_elem(&ic_valve_v6, &key)) {
			ic_count(&ic_totals, IC_TOTAL_VALVE, pkt.len);
			return XDP_PASS;
		}
		pkt.family = 6;
		table = bpf_map_lookup_elem(&ic_v6_trie, &slot);
		return ic_decide(ctx, &pkt, table ? bpf_map_lookup_elem(table, &key) : NULL, active);
	}
	ic_count(&ic_totals, IC_TOTAL_NON_IP, pkt.len);
	return XDP_PASS;
}
