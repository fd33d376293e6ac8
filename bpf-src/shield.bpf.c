// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * shield.bpf.c - XDP source-address firewall.
 *
 * Order of decisions for every IPv4/IPv6 packet:
 *   1. source in the management safety valve  -> XDP_PASS (always, counted as valve);
 *   2. longest matching prefix in the rule trie of its family:
 *        deny  -> XDP_DROP (or XDP_PASS counted as would-drop in dry-run),
 *        allow -> XDP_PASS (an exception inside a denied range: longest prefix wins);
 *   3. no match -> XDP_PASS.
 * Non-IP frames pass; malformed/truncated frames pass and are counted.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "ironclad.h"
#include "parse.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_SHIELD_MAX_V4_PREFIXES);
	__type(key, struct ic_lpm_v4_key);
	__type(value, struct ic_rule);
} ic_rules_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_SHIELD_MAX_V6_PREFIXES);
	__type(key, struct ic_lpm_v6_key);
	__type(value, struct ic_rule);
} ic_rules_v6 SEC(".maps");

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
	__type(value, struct ic_counter);
} ic_totals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ic_shield_config);
} ic_shield_config SEC(".maps");

/* Keep the ABI enums in BTF so user space can check its mirrors against them. */
const volatile enum ic_abi ic_abi_version = IC_ABI_VERSION;
const volatile enum ic_action ic_abi_action = IC_ACTION_NONE;
const volatile enum ic_shield_total ic_abi_total = IC_TOTAL_COUNT;
const volatile enum ic_shield_flags ic_abi_flags = IC_SHIELD_F_DRY_RUN;
const volatile enum ic_shield_limits ic_abi_limits = IC_SHIELD_MAX_RULES;

static __always_inline void ic_count(void *map, __u32 index, __u64 bytes)
{
	struct ic_counter *c = bpf_map_lookup_elem(map, &index);

	if (c) {
		c->packets += 1;
		c->bytes += bytes;
	}
}

static __always_inline int ic_verdict(struct ic_rule *rule, __u64 bytes)
{
	__u32 zero = 0;
	struct ic_shield_config *cfg;

	if (!rule || rule->action != IC_ACTION_DENY) {
		if (rule)
			ic_count(&ic_rule_counters, rule->rule_id, bytes);
		ic_count(&ic_totals, IC_TOTAL_PASSED, bytes);
		return XDP_PASS;
	}
	ic_count(&ic_rule_counters, rule->rule_id, bytes);
	cfg = bpf_map_lookup_elem(&ic_shield_config, &zero);
	if (cfg && (cfg->flags & IC_SHIELD_F_DRY_RUN)) {
		ic_count(&ic_totals, IC_TOTAL_WOULD_DROP, bytes);
		return XDP_PASS;
	}
	ic_count(&ic_totals, IC_TOTAL_DROPPED, bytes);
	return XDP_DROP;
}

SEC("xdp")
int ic_shield_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 bytes = data_end - data;
	struct ic_l3_info info = {};
	int l3 = ic_parse_l2(data, data_end, &info);

	if (l3 == IC_L3_MALFORMED) {
		ic_count(&ic_totals, IC_TOTAL_MALFORMED, bytes);
		return XDP_PASS;
	}
	if (l3 == IC_L3_IPV4) {
		struct iphdr *ip = info.l3;
		struct ic_lpm_v4_key key = { .prefixlen = 32 };

		if ((void *)(ip + 1) > data_end)
			return XDP_PASS;
		__builtin_memcpy(key.addr, &ip->saddr, sizeof(key.addr));
		if (bpf_map_lookup_elem(&ic_valve_v4, &key)) {
			ic_count(&ic_totals, IC_TOTAL_VALVE, bytes);
			return XDP_PASS;
		}
		return ic_verdict(bpf_map_lookup_elem(&ic_rules_v4, &key), bytes);
	}
	if (l3 == IC_L3_IPV6) {
		struct ipv6hdr *ip6 = info.l3;
		struct ic_lpm_v6_key key = { .prefixlen = 128 };

		if ((void *)(ip6 + 1) > data_end)
			return XDP_PASS;
		__builtin_memcpy(key.addr, &ip6->saddr, sizeof(key.addr));
		if (bpf_map_lookup_elem(&ic_valve_v6, &key)) {
			ic_count(&ic_totals, IC_TOTAL_VALVE, bytes);
			return XDP_PASS;
		}
		return ic_verdict(bpf_map_lookup_elem(&ic_rules_v6, &key), bytes);
	}
	ic_count(&ic_totals, IC_TOTAL_NON_IP, bytes);
	return XDP_PASS;
}
