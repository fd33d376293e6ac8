// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * quarantine.bpf.c - sources in an IOC set are tagged or redirected, not dropped.
 *
 * Two tcx programs (ingress and egress of each chosen interface) look up each IPv4 or
 * IPv6 packet's source in LPM tries; a match gets the prefix's action: an 802.1Q tag
 * pushed onto the frame (on ingress the kernel then delivers it through the VLAN
 * sub-interface, e.g. a honeypot's; on egress the switch puts it in the quarantine
 * VLAN), or a redirect to another interface (a sandbox, a capture host). Unmatched
 * traffic is untouched; a tag or redirect the kernel refuses is counted and the packet
 * passes as it was.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "ironclad.h"
#include "parse.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define IC_TCX_NEXT -1
#define IC_TCX_REDIRECT 7
#define IC_ETH_P_8021Q_HOST 0x8100
#define IC_BPF_F_INGRESS 1

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_QUARANTINE_PREFIXES);
	__type(key, struct ic_lpm_v4_key);
	__type(value, struct ic_quarantine_action);
} ic_quarantine_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_QUARANTINE_PREFIXES);
	__type(key, struct ic_lpm_v6_key);
	__type(value, struct ic_quarantine_action);
} ic_quarantine_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IC_QUARANTINE_TOTAL_COUNT);
	__type(key, __u32);
	__type(value, struct ic_counter);
} ic_quarantine_totals SEC(".maps");

const volatile enum ic_quarantine_kind ic_abi_quarantine_kind = IC_QUARANTINE_VLAN;
const volatile enum ic_quarantine_total ic_abi_quarantine_total = IC_QUARANTINE_SEEN;
const volatile struct ic_quarantine_action ic_abi_quarantine_action = {};

static __always_inline void ic_q_count(__u32 which, __u64 bytes)
{
	struct ic_counter *c = bpf_map_lookup_elem(&ic_quarantine_totals, &which);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline int ic_quarantine(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ic_l3_info info = {};
	struct ic_quarantine_action *a = NULL;
	int family;

	/* A frame already tagged (by us, or on a trunk) is left alone. */
	if (skb->vlan_present)
		return IC_TCX_NEXT;
	family = ic_parse_l2(data, data_end, &info);
	if (family == IC_L3_IPV4) {
		struct iphdr *ip = info.l3;
		struct ic_lpm_v4_key k = {.prefixlen = 32};

		if ((void *)(ip + 1) > data_end)
			return IC_TCX_NEXT;
		__builtin_memcpy(k.addr, &ip->saddr, 4);
		a = bpf_map_lookup_elem(&ic_quarantine_v4, &k);
	} else if (family == IC_L3_IPV6) {
		struct ipv6hdr *ip6 = info.l3;
		struct ic_lpm_v6_key k = {.prefixlen = 128};

		if ((void *)(ip6 + 1) > data_end)
			return IC_TCX_NEXT;
		__builtin_memcpy(k.addr, &ip6->saddr, 16);
		a = bpf_map_lookup_elem(&ic_quarantine_v6, &k);
	} else {
		return IC_TCX_NEXT;
	}
	ic_q_count(IC_QUARANTINE_SEEN, skb->len);
	if (!a)
		return IC_TCX_NEXT;
	if (a->kind == IC_QUARANTINE_VLAN) {
		if (bpf_skb_vlan_push(skb, bpf_htons(IC_ETH_P_8021Q_HOST), a->vlan) < 0) {
			ic_q_count(IC_QUARANTINE_FAILED, skb->len);
			return IC_TCX_NEXT;
		}
		ic_q_count(IC_QUARANTINE_TAGGED, skb->len);
		return IC_TCX_NEXT;
	}
	if (a->kind == IC_QUARANTINE_REDIRECT || a->kind == IC_QUARANTINE_REDIRECT_INGRESS) {
		ic_q_count(IC_QUARANTINE_REDIRECTED, skb->len);
		return bpf_redirect(a->ifindex,
				    a->kind == IC_QUARANTINE_REDIRECT_INGRESS ? IC_BPF_F_INGRESS : 0);
	}
	return IC_TCX_NEXT;
}

SEC("tcx/ingress")
int ic_quarantine_in(struct __sk_buff *skb)
{
	return ic_quarantine(skb);
}

SEC("tcx/egress")
int ic_quarantine_out(struct __sk_buff *skb)
{
	return ic_quarantine(skb);
}
