// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * audit_forbidden.bpf.c - test object for the helper audit. It must never load:
 * `ic_test_write_user` calls bpf_probe_write_user directly and `ic_test_signal` reaches
 * bpf_send_signal through a non-inlined subprogram. `ic_test_benign` is harmless, and is
 * not loaded either because the audit rejects the object as a whole.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

__u64 ic_test_scratch;

SEC("xdp")
int ic_test_benign(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("raw_tp/sys_enter")
int ic_test_write_user(void *ctx)
{
	__u64 value = bpf_get_current_pid_tgid();

	bpf_probe_write_user((void *)ic_test_scratch, &value, sizeof(value));
	return 0;
}

static __noinline int ic_test_hidden_signal(__u64 pid_tgid)
{
	if ((pid_tgid >> 32) == ic_test_scratch)
		return bpf_send_signal(9);
	return 0;
}

SEC("raw_tp/sys_exit")
int ic_test_signal(void *ctx)
{
	return ic_test_hidden_signal(bpf_get_current_pid_tgid());
}
