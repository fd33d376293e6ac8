// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * baseline.bpf.c - programs that only pass every frame, one per hook type the
 * benchmarks time (XDP for the Shield, tcx for the firewall). Benchmarks subtract their
 * cost (the BPF_PROG_TEST_RUN round trip) from the feature's to get the feature's own.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

SEC("xdp")
int ic_baseline_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}

/* TCX_NEXT: what the firewall returns for a packet it passes. */
SEC("tcx/ingress")
int ic_baseline_tc(struct __sk_buff *skb)
{
	return -1;
}
