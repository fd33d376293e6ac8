// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * telemetry.bpf.c - bandwidth per process and DNS at the socket layer.
 *
 * cgroup/sock_create records who created each socket (by socket cookie) and
 * cgroup/sock_release forgets it. cgroup_skb/egress and ingress then attribute every
 * packet of the cgroup's sockets to the socket's owner: bytes and packets per process,
 * and, for UDP or TCP port 53, a copy of the DNS payload into a ring buffer (parsed in
 * user space, bounds-checked). Packets are never dropped here.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "ironclad.h"
#include "proctable.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define IC_ETH_P_IP 0x0800
#define IC_ETH_P_IPV6 0x86DD

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, IC_SOCKETS);
	__type(key, __u64); /* socket cookie */
	__type(value, struct ic_sock_owner);
} ic_sock_owners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, IC_EGRESS_IDENTITIES);
	__type(key, __u32); /* tgid */
	__type(value, struct ic_bandwidth);
} ic_bandwidth SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ic_telemetry_config);
} ic_telemetry_config SEC(".maps");

/* [0]: DNS events lost to a full ring buffer. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} ic_telemetry_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);
} ic_dns_events SEC(".maps");

const volatile enum ic_telemetry_limits ic_abi_telemetry_limits = IC_DNS_CAPTURE;
const volatile enum ic_telemetry_dir ic_abi_telemetry_dir = IC_DIR_OUT;
const volatile enum ic_event_kind ic_abi_dns_kind = IC_EVENT_DNS;
const volatile struct ic_dns_event ic_abi_dns_event;
const volatile struct ic_bandwidth ic_abi_bandwidth;
const volatile struct ic_sock_owner ic_abi_sock_owner;

SEC("cgroup/sock_create")
int ic_sock_create(struct bpf_sock *sk)
{
	__u64 cookie = bpf_get_socket_cookie(sk);
	struct ic_sock_owner owner = {};

	owner.tgid = bpf_get_current_pid_tgid() >> 32;
	owner.uid = bpf_get_current_uid_gid();
	bpf_get_current_comm(owner.comm, sizeof(owner.comm));
	bpf_map_update_elem(&ic_sock_owners, &cookie, &owner, BPF_ANY);
	return 1;
}

SEC("cgroup/sock_release")
int ic_sock_release(struct bpf_sock *sk)
{
	__u64 cookie = bpf_get_socket_cookie(sk);

	bpf_map_delete_elem(&ic_sock_owners, &cookie);
	return 1;
}

struct ic_l4info {
	__u32 payload_off;
	__u32 payload_len;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 src[16];
	__u8 dst[16];
};

/* Finds the transport payload of the IP packet in skb (cgroup skb data starts at the
 * network header). Returns 0 if it is not TCP or UDP over IPv4/IPv6 (no IPv6
 * extension headers). */
static __always_inline int ic_l4(struct __sk_buff *skb, struct ic_l4info *l)
{
	__u32 l3_len, l4_off;
	__u8 ports[4];

	if (skb->protocol == bpf_htons(IC_ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return 0;
		if (ip.frag_off & bpf_htons(0x1fff))
			return 0;
		l4_off = ip.ihl * 4;
		l3_len = bpf_ntohs(ip.tot_len);
		l->proto = ip.protocol;
		l->src[10] = l->src[11] = 0xff;
		l->dst[10] = l->dst[11] = 0xff;
		__builtin_memcpy(&l->src[12], &ip.saddr, 4);
		__builtin_memcpy(&l->dst[12], &ip.daddr, 4);
	} else if (skb->protocol == bpf_htons(IC_ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return 0;
		l4_off = sizeof(ip6);
		l3_len = sizeof(ip6) + bpf_ntohs(ip6.payload_len);
		l->proto = ip6.nexthdr;
		__builtin_memcpy(l->src, &ip6.saddr, 16);
		__builtin_memcpy(l->dst, &ip6.daddr, 16);
	} else {
		return 0;
	}
	if (bpf_skb_load_bytes(skb, l4_off, ports, sizeof(ports)))
		return 0;
	l->sport = (ports[0] << 8) | ports[1];
	l->dport = (ports[2] << 8) | ports[3];
	if (l->proto == IPPROTO_TCP) {
		__u8 doff;

		if (bpf_skb_load_bytes(skb, l4_off + 12, &doff, 1))
			return 0;
		l->payload_off = l4_off + (doff >> 4) * 4;
	} else if (l->proto == IPPROTO_UDP) {
		l->payload_off = l4_off + 8;
	} else {
		return 0;
	}
	l->payload_len = l3_len > l->payload_off ? l3_len - l->payload_off : 0;
	return 1;
}

static __always_inline void ic_dns(struct __sk_buff *skb, struct ic_sock_owner *owner,
				   struct ic_l4info *l, __u8 direction)
{
	struct ic_dns_event *e;
	struct ic_proc_info *info;
	__u32 zero = 0, tgid = owner->tgid;
	__u64 len = l->payload_len;

	e = bpf_ringbuf_reserve(&ic_dns_events, sizeof(*e), 0);
	if (!e) {
		__u64 *lost = bpf_map_lookup_elem(&ic_telemetry_stats, &zero);

		if (lost)
			*lost += 1;
		return;
	}
	e->hdr.version = IC_ABI_VERSION;
	e->hdr.kind = IC_EVENT_DNS;
	e->hdr.size = sizeof(*e);
	e->hdr.ktime_ns = bpf_ktime_get_ns();
	e->pid = owner->tgid;
	e->uid = owner->uid;
	__builtin_memcpy(e->comm, owner->comm, 16);
	info = bpf_map_lookup_elem(&ic_procs, &tgid);
	if (info)
		e->exe = info->exe;
	else
		__builtin_memset(&e->exe, 0, sizeof(e->exe));
	__builtin_memcpy(e->src, l->src, 16);
	__builtin_memcpy(e->dst, l->dst, 16);
	e->sport = l->sport;
	e->dport = l->dport;
	e->proto = l->proto;
	e->direction = direction;
	e->_pad0[0] = e->_pad0[1] = 0;
	e->total = l->payload_len;
	if (len > IC_DNS_CAPTURE)
		len = IC_DNS_CAPTURE;
	e->len = 0;
	/* The length handed to bpf_skb_load_bytes must be provably 1..IC_DNS_CAPTURE. A
	 * test such as `len > 0 && len <= N` does not prove it to 6.1's verifier: clang
	 * turns it into `len != 0` (6.1 learns no lower bound from that) or into one test
	 * of `len - 1` in a copy (6.1 does not carry the copy's bounds back). The range
	 * below follows from the arithmetic itself ((x & (N - 1)) + 1 is 1..N, N a power
	 * of two), and equals len for every len in 1..N. */
	_Static_assert((IC_DNS_CAPTURE & (IC_DNS_CAPTURE - 1)) == 0,
		       "IC_DNS_CAPTURE is a power of two");
	if (len > 0) {
		__u32 n;

		/* Hidden from clang, which would otherwise see that the mask changes
		 * nothing here and drop it. */
		barrier_var(len);
		n = ((len - 1) & (IC_DNS_CAPTURE - 1)) + 1;

		if (!bpf_skb_load_bytes(skb, l->payload_off, e->data, n))
			e->len = n;
	}
	bpf_ringbuf_submit(e, 0);
}

static __always_inline int ic_skb(struct __sk_buff *skb, __u8 direction)
{
	__u32 zero = 0;
	struct ic_telemetry_config *cfg = bpf_map_lookup_elem(&ic_telemetry_config, &zero);
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct ic_sock_owner *owner;
	struct ic_l4info l = {};
	int has_l4;

	if (!cfg)
		return 1;
	owner = bpf_map_lookup_elem(&ic_sock_owners, &cookie);
	if (!owner)
		return 1;
	has_l4 = ic_l4(skb, &l);
	if (cfg->bandwidth) {
		__u32 tgid = owner->tgid;
		struct ic_bandwidth *bw = bpf_map_lookup_elem(&ic_bandwidth, &tgid);

		if (!bw) {
			struct ic_bandwidth fresh = {};
			struct ic_proc_info *info = bpf_map_lookup_elem(&ic_procs, &tgid);

			if (info)
				fresh.exe = info->exe;
			__builtin_memcpy(fresh.comm, owner->comm, 16);
			bpf_map_update_elem(&ic_bandwidth, &tgid, &fresh, BPF_NOEXIST);
			bw = bpf_map_lookup_elem(&ic_bandwidth, &tgid);
		}
		if (bw) {
			if (direction == IC_DIR_OUT) {
				__sync_fetch_and_add(&bw->tx_bytes, skb->len);
				__sync_fetch_and_add(&bw->tx_packets, 1);
				if (has_l4)
					__sync_fetch_and_add(&bw->tx_payload, l.payload_len);
			} else {
				__sync_fetch_and_add(&bw->rx_bytes, skb->len);
				__sync_fetch_and_add(&bw->rx_packets, 1);
				if (has_l4)
					__sync_fetch_and_add(&bw->rx_payload, l.payload_len);
			}
		}
	}
	if (cfg->dns && has_l4 && l.payload_len > 0 &&
	    ((direction == IC_DIR_OUT && l.dport == 53) || (direction == IC_DIR_IN && l.sport == 53)))
		ic_dns(skb, owner, &l, direction);
	return 1;
}

SEC("cgroup_skb/egress")
int ic_skb_egress(struct __sk_buff *skb)
{
	return ic_skb(skb, IC_DIR_OUT);
}

SEC("cgroup_skb/ingress")
int ic_skb_ingress(struct __sk_buff *skb)
{
	return ic_skb(skb, IC_DIR_IN);
}
