/* SPDX-License-Identifier: MIT OR GPL-2.0-only */
/*
 * parse.h - bounds-checked packet parsing shared by Ironclad's XDP/TC programs.
 *
 * Every read is preceded by a check against data_end; a packet whose headers do not fit
 * is reported as malformed and never read past its end.
 */
#ifndef IRONCLAD_PARSE_H
#define IRONCLAD_PARSE_H

#include "vmlinux.h"
#include <bpf/bpf_endian.h>

#define IC_ETH_P_IP 0x0800
#define IC_ETH_P_IPV6 0x86DD
#define IC_ETH_P_8021Q 0x8100
#define IC_ETH_P_8021AD 0x88A8

/* Result of L3 parsing. */
enum ic_l3 {
	IC_L3_MALFORMED = -1,
	IC_L3_OTHER = 0,
	IC_L3_IPV4 = 4,
	IC_L3_IPV6 = 6,
};

struct ic_l3_info {
	void *l3;      /* start of the IPv4 or IPv6 header */
	__u16 proto;   /* ethertype, network order */
};

/* Skip Ethernet and up to two VLAN tags. Returns IC_L3_* and fills info->l3. */
static __always_inline int ic_parse_l2(void *data, void *data_end, struct ic_l3_info *info)
{
	struct ethhdr *eth = data;
	void *cursor = data;
	__u16 proto;

	if ((void *)(eth + 1) > data_end)
		return IC_L3_MALFORMED;
	proto = eth->h_proto;
	cursor = eth + 1;

#pragma unroll
	for (int i = 0; i < 2; i++) {
		struct vlan_hdr *vlan;

		if (proto != bpf_htons(IC_ETH_P_8021Q) && proto != bpf_htons(IC_ETH_P_8021AD))
			break;
		vlan = cursor;
		if ((void *)(vlan + 1) > data_end)
			return IC_L3_MALFORMED;
		proto = vlan->h_vlan_encapsulated_proto;
		cursor = vlan + 1;
	}

	info->l3 = cursor;
	info->proto = proto;
	if (proto == bpf_htons(IC_ETH_P_IP)) {
		struct iphdr *ip = cursor;

		if ((void *)(ip + 1) > data_end)
			return IC_L3_MALFORMED;
		if (ip->version != 4 || ip->ihl < 5)
			return IC_L3_MALFORMED;
		if ((void *)ip + ip->ihl * 4 > data_end)
			return IC_L3_MALFORMED;
		return IC_L3_IPV4;
	}
	if (proto == bpf_htons(IC_ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cursor;

		if ((void *)(ip6 + 1) > data_end)
			return IC_L3_MALFORMED;
		if (ip6->version != 6)
			return IC_L3_MALFORMED;
		return IC_L3_IPV6;
	}
	return IC_L3_OTHER;
}

/* L4 protocol and ports, for reporting (never for verdicts). */
struct ic_l4 {
	__u8 proto;
	__u16 sport; /* host order */
	__u16 dport; /* host order */
	__u8 frag;      /* behind a fragment header: 1 the first of several, 2 a later one */
	__u32 frag_id;  /* network order; the fragment header's identification */
};

#define IC_IPPROTO_TCP 6
#define IC_IPPROTO_UDP 17
#define IC_IPV6_HOP 0
#define IC_IPV6_ROUTING 43
#define IC_IPV6_FRAGMENT 44
#define IC_IPV6_AH 51
#define IC_IPV6_DSTOPTS 60
/* Extension headers followed before giving up on finding L4. */
#define IC_IPV6_MAX_EXT 8

static __always_inline void ic_read_ports(void *l4, void *data_end, struct ic_l4 *out)
{
	__u16 *ports = l4;

	if (out->proto != IC_IPPROTO_TCP && out->proto != IC_IPPROTO_UDP)
		return;
	if ((void *)(ports + 2) > data_end)
		return;
	out->sport = bpf_ntohs(ports[0]);
	out->dport = bpf_ntohs(ports[1]);
}

/* IPv4: protocol and, for the first fragment of TCP/UDP, the ports. */
static __always_inline void ic_parse_l4_v4(struct iphdr *ip, void *data_end, struct ic_l4 *out)
{
	if ((void *)(ip + 1) > data_end)
		return;
	out->proto = ip->protocol;
	if (ip->frag_off & bpf_htons(0x1fff))
		return;
	ic_read_ports((void *)ip + ip->ihl * 4, data_end, out);
}

/* IPv6: follows up to IC_IPV6_MAX_EXT extension headers (hop-by-hop, routing,
 * destination options, fragment, AH) to the L4 header. A truncated chain, a chain that
 * is too long or a non-first fragment leaves the ports at zero. */
static __always_inline void ic_parse_l4_v6(struct ipv6hdr *ip6, void *data_end, struct ic_l4 *out)
{
	void *cursor;
	__u8 next;

	if ((void *)(ip6 + 1) > data_end)
		return;
	next = ip6->nexthdr;
	cursor = ip6 + 1;
#pragma unroll
	for (int i = 0; i < IC_IPV6_MAX_EXT; i++) {
		struct ipv6_opt_hdr *opt = cursor;

		if (next != IC_IPV6_HOP && next != IC_IPV6_ROUTING && next != IC_IPV6_DSTOPTS &&
		    next != IC_IPV6_FRAGMENT && next != IC_IPV6_AH)
			break;
		if ((void *)(opt + 1) > data_end) {
			out->proto = next;
			return;
		}
		if (next == IC_IPV6_FRAGMENT) {
			struct frag_hdr *frag = cursor;

			if ((void *)(frag + 1) > data_end) {
				out->proto = next;
				return;
			}
			next = frag->nexthdr;
			out->frag_id = frag->identification;
			if (frag->frag_off & bpf_htons(0xfff8)) {
				out->frag = 2;
				out->proto = next; /* not the first fragment: no L4 header here */
				return;
			}
			if (frag->frag_off & bpf_htons(1))
				out->frag = 1;
			cursor += sizeof(*frag);
		} else if (next == IC_IPV6_AH) {
			next = opt->nexthdr;
			cursor += ((__u32)opt->hdrlen + 2) * 4;
		} else {
			next = opt->nexthdr;
			cursor += ((__u32)opt->hdrlen + 1) * 8;
		}
	}
	out->proto = next;
	ic_read_ports(cursor, data_end, out);
}

#endif /* IRONCLAD_PARSE_H */
