// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * baseline.bpf.c - programs that only pass every frame or call (or send it back), one
 * per hook type the benchmarks time (XDP for the Shield, XDP_TX for the SYN-flood
 * defence, tcx for the firewall, cgroup/connect4 for the identity firewall). Benchmarks
 * subtract their cost (the BPF_PROG_TEST_RUN round trip, the kernel's hook) from the
 * feature's to get the feature's own.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

SEC("xdp")
int ic_baseline_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}

/* Sends every frame back out as it came (XDP_TX): the floor under the SYN-flood
 * defence's answers, which are rewritten frames sent back the same way. */
SEC("xdp")
int ic_baseline_xdp_tx(struct xdp_md *ctx)
{
	return XDP_TX;
}

/* TCX_NEXT: what the firewall returns for a packet it passes. */
SEC("tcx/ingress")
int ic_baseline_tc(struct __sk_buff *skb)
{
	return -1;
}

/* Lets every connect(): the identity firewall's hook with nothing in it, so the kernel's
 * own cost of running a cgroup/connect4 program (the socket lock, the address copy, the
 * route check on release) is measured apart from the firewall's. */
SEC("cgroup/connect4")
int ic_baseline_connect4(struct bpf_sock_addr *ctx)
{
	return 1;
}
