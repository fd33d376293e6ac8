// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * scrub.bpf.c - packet normalisation on the interfaces the operator chooses.
 *
 * Two tcx programs (egress, and ingress when asked) rewrite, per the interface's
 * struct ic_scrub_config:
 *   - the IPv4 TTL / IPv6 hop limit, raised to a floor (a peer's traceroute or a
 *     TTL-based evasion then sees the same value on every packet);
 *   - the MSS option of TCP SYNs and SYN-ACKs, lowered to a maximum (tunnels and
 *     PPPoE links whose path MTU discovery is broken);
 *   - the IPv4 Don't Fragment bit, cleared;
 *   - the IPv4 identification of unfragmented packets, randomised (it leaks a host's
 *     packet rate and lets an observer count hosts behind a NAT).
 * Every rewrite keeps the IPv4 header checksum and the TCP checksum right through the
 * kernel's checksum helpers, whatever the offload state (a CHECKSUM_PARTIAL packet's
 * pseudo-header sum is adjusted the way the hardware will finish it). A rewrite the
 * kernel refuses is counted and the packet passes as it was: scrubbing never drops.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "ironclad.h"
#include "parse.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define IC_TCX_NEXT -1
#define IC_TCP_SYN 0x02
#define IC_TCP_OPT_MSS 2
#define IC_TCP_OPT_NOP 1
#define IC_TCP_OPT_END 0
#define IC_IP_DF 0x4000
#define IC_IP_MF 0x2000
#define IC_IP_OFFSET 0x1fff
/* Hides a value's known range from the compiler, so that a mask after it stays (the
 * verifier needs the mask to bound a stack index). */
#define IC_OPAQUE(x) asm volatile("" : "+r"(x))

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, IC_SCRUB_INTERFACES);
	__type(key, __u32);
	__type(value, struct ic_scrub_config);
} ic_scrub_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IC_SCRUB_TOTAL_COUNT);
	__type(key, __u32);
	__type(value, struct ic_counter);
} ic_scrub_totals SEC(".maps");

const volatile enum ic_scrub_flags ic_abi_scrub_flags = IC_SCRUB_F_CLEAR_DF;
const volatile enum ic_scrub_total ic_abi_scrub_total = IC_SCRUB_SEEN;
const volatile struct ic_scrub_config ic_abi_scrub_config = {};

static __always_inline void ic_scrub_count(__u32 which, __u64 bytes)
{
	struct ic_counter *c = bpf_map_lookup_elem(&ic_scrub_totals, &which);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

/* Replaces the 16-bit word at `off` (network order values) and fixes the IPv4 header
 * checksum at `csum_off`. Returns 0, or -1 when the kernel refused. */
static __always_inline int ic_scrub_l3_word(struct __sk_buff *skb, __u32 off, __u32 csum_off,
					    __u16 old, __u16 new)
{
	if (bpf_skb_store_bytes(skb, off, &new, 2, 0) < 0)
		return -1;
	if (bpf_l3_csum_replace(skb, csum_off, old, new, 2) < 0)
		return -1;
	return 0;
}

/* The IPv4 header at l3off: TTL floor, DF, identification. */
static __always_inline void ic_scrub_v4(struct __sk_buff *skb, const struct ic_scrub_config *c,
					__u32 l3off)
{
	struct iphdr ip;
	__u32 csum = l3off + offsetof(struct iphdr, check);

	if (bpf_skb_load_bytes(skb, l3off, &ip, sizeof(ip)) < 0)
		return;
	if (c->ttl_floor && ip.ttl < c->ttl_floor) {
		/* TTL and protocol share a 16-bit word of the checksum. */
		__u16 old = bpf_htons((__u16)ip.ttl << 8 | ip.protocol);
		__u16 new = bpf_htons((__u16)c->ttl_floor << 8 | ip.protocol);

		if (ic_scrub_l3_word(skb, l3off + offsetof(struct iphdr, ttl), csum, old, new))
			ic_scrub_count(IC_SCRUB_FAILED, skb->len);
		else
			ic_scrub_count(IC_SCRUB_TTL, skb->len);
	}
	if ((c->flags & IC_SCRUB_F_CLEAR_DF) && (ip.frag_off & bpf_htons(IC_IP_DF))) {
		__u16 new = ip.frag_off & ~bpf_htons(IC_IP_DF);

		if (ic_scrub_l3_word(skb, l3off + offsetof(struct iphdr, frag_off), csum,
				     ip.frag_off, new))
			ic_scrub_count(IC_SCRUB_FAILED, skb->len);
		else
			ic_scrub_count(IC_SCRUB_DF, skb->len);
		ip.frag_off = new;
	}
	/* Fragments keep their identification: the receiver reassembles by it. */
	if ((c->flags & IC_SCRUB_F_RANDOM_ID) &&
	    !(ip.frag_off & bpf_htons(IC_IP_MF | IC_IP_OFFSET))) {
		__u16 new = (__u16)bpf_get_prandom_u32();

		if (ic_scrub_l3_word(skb, l3off + offsetof(struct iphdr, id), csum, ip.id, new))
			ic_scrub_count(IC_SCRUB_FAILED, skb->len);
		else
			ic_scrub_count(IC_SCRUB_ID, skb->len);
	}
}

/* A TCP SYN (or SYN-ACK) at l4off: its MSS option lowered to mss_max. */
static __always_inline void ic_scrub_mss(struct __sk_buff *skb, const struct ic_scrub_config *c,
					 __u32 l4off)
{
	__u8 hdr[20];
	__u8 opts[64]; /* 40 bytes of options at most; indexes masked to 63 */
	__u32 len, i;

	if (bpf_skb_load_bytes(skb, l4off, hdr, sizeof(hdr)) < 0 || !(hdr[13] & IC_TCP_SYN))
		return;
	len = (hdr[12] >> 4) * 4;
	if (len <= 20)
		return;
	len -= 20;
	if (len < 1 || len > 40)
		return;
	/* Exactly the options' bytes: a SYN often ends with them. */
	__builtin_memset(opts, 0, sizeof(opts));
	if (bpf_skb_load_bytes(skb, l4off + 20, opts, len) < 0)
		return;
	for (i = 0; i < 40; i++) {
		__u8 kind, olen;

		__u32 at = i;

		if (i >= len)
			return;
		IC_OPAQUE(at);
		kind = opts[at & 63];
		if (kind == IC_TCP_OPT_END)
			return;
		if (kind == IC_TCP_OPT_NOP)
			continue;
		if (i + 1 >= len)
			return;
		olen = opts[(at + 1) & 63];
		if (olen < 2)
			return;
		if (kind == IC_TCP_OPT_MSS && olen == 4 && i + 3 < len) {
			__u16 old = (__u16)opts[(at + 2) & 63] << 8 | opts[(at + 3) & 63];
			__u16 want = c->mss_max;

			if (old > want) {
				__be16 o = bpf_htons(old), n = bpf_htons(want);

				if (bpf_skb_store_bytes(skb, l4off + 20 + i + 2, &n, 2, 0) < 0 ||
				    bpf_l4_csum_replace(skb, l4off + offsetof(struct tcphdr, check),
							o, n, 2) < 0)
					ic_scrub_count(IC_SCRUB_FAILED, skb->len);
				else
					ic_scrub_count(IC_SCRUB_MSS, skb->len);
			}
			return;
		}
		i += olen - 1;
	}
}

static __always_inline int ic_scrub(struct __sk_buff *skb, int ingress)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ic_scrub_config *c;
	struct ic_l3_info info = {};
	__u32 ifindex = skb->ifindex, l3off, l4off;
	__u8 proto;
	int family;

	c = bpf_map_lookup_elem(&ic_scrub_config, &ifindex);
	if (!c || (ingress && !(c->flags & IC_SCRUB_F_INGRESS)))
		return IC_TCX_NEXT;
	ic_scrub_count(IC_SCRUB_SEEN, skb->len);
	family = ic_parse_l2(data, data_end, &info);
	if (family != IC_L3_IPV4 && family != IC_L3_IPV6)
		return IC_TCX_NEXT;
	l3off = (__u32)(info.l3 - data);
	if (family == IC_L3_IPV4) {
		struct iphdr *ip = info.l3;

		if ((void *)(ip + 1) > data_end || ip->ihl < 5)
			return IC_TCX_NEXT;
		proto = ip->protocol;
		l4off = l3off + ip->ihl * 4;
		/* Not a first fragment: no TCP header here. */
		if (ip->frag_off & bpf_htons(IC_IP_OFFSET))
			proto = 0;
		ic_scrub_v4(skb, c, l3off);
	} else {
		struct ipv6hdr *ip6 = info.l3;

		if ((void *)(ip6 + 1) > data_end)
			return IC_TCX_NEXT;
		proto = ip6->nexthdr; /* TCP behind extension headers is left alone */
		l4off = l3off + sizeof(*ip6);
		if (c->hop_floor && ip6->hop_limit < c->hop_floor) {
			__u8 hop = c->hop_floor;

			if (bpf_skb_store_bytes(skb, l3off + offsetof(struct ipv6hdr, hop_limit),
						&hop, 1, 0) < 0)
				ic_scrub_count(IC_SCRUB_FAILED, skb->len);
			else
				ic_scrub_count(IC_SCRUB_TTL, skb->len);
		}
	}
	if (proto == IPPROTO_TCP && c->mss_max)
		ic_scrub_mss(skb, c, l4off);
	return IC_TCX_NEXT;
}

SEC("tcx/egress")
int ic_scrub_out(struct __sk_buff *skb)
{
	return ic_scrub(skb, 0);
}

SEC("tcx/ingress")
int ic_scrub_in(struct __sk_buff *skb)
{
	return ic_scrub(skb, 1);
}
