// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * baseline.bpf.c - an XDP program that only passes every frame. Benchmarks subtract its
 * cost (the BPF_PROG_TEST_RUN round trip) from the Shield's to get the Shield's own.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

SEC("xdp")
int ic_baseline_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}
