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

#endif /* IRONCLAD_PARSE_H */
