/* SPDX-License-Identifier: MIT OR GPL-2.0-only */
/*
 * ironclad.h - the Ironclad kernel/user ABI.
 *
 * This header is the single source of truth for every struct, enum and constant that
 * crosses the boundary between Ironclad's eBPF programs and user space. Rules:
 *   - fixed-width __u8/__u16/__u32/__u64 only; no bool, no bitfields, no pointers;
 *   - every struct is padded explicitly (fields named _padN) so that its size is a
 *     multiple of its alignment and no implicit padding exists;
 *   - the byte order of every multi-byte field is stated next to it.
 *
 * The Rust mirrors live in ironclad-core/src/abi.rs. ironclad-bpf checks them at compile
 * time against the types libbpf-cargo generates from the BTF of the compiled objects,
 * so a change here that is not made there breaks the build.
 *
 * Every enum below is also referenced by a map or global so that it is present in BTF.
 */
#ifndef IRONCLAD_ABI_H
#define IRONCLAD_ABI_H

/* ABI version. Bump on any change to a struct below. */
enum ic_abi {
	IC_ABI_VERSION = 1,
};

/* What a matching rule does. */
enum ic_action {
	IC_ACTION_NONE = 0,  /* no rule matched */
	IC_ACTION_DENY = 1,  /* drop (or would drop in dry-run) */
	IC_ACTION_ALLOW = 2, /* explicit exception: pass */
};

/* Sizes and limits of the Shield maps. User space may shrink (never grow past) the
 * rule-counter array before load. */
enum ic_shield_limits {
	IC_SHIELD_MAX_RULES = 16384,
	IC_SHIELD_MAX_V4_PREFIXES = 1048576,
	IC_SHIELD_MAX_V6_PREFIXES = 262144,
	IC_SHIELD_MAX_VALVE_PREFIXES = 1024,
};

/* Index of the Shield's global totals (per-CPU array). */
enum ic_shield_total {
	IC_TOTAL_PASSED = 0,    /* packets that passed */
	IC_TOTAL_DROPPED = 1,   /* packets dropped by a deny rule */
	IC_TOTAL_MALFORMED = 2, /* truncated or malformed L2/L3 headers, passed */
	IC_TOTAL_VALVE = 3,     /* packets from a management (safety valve) source */
	IC_TOTAL_NON_IP = 4,    /* neither IPv4 nor IPv6 (ARP, LLDP, ...), passed */
	IC_TOTAL_WOULD_DROP = 5,/* dry-run: a deny rule matched, packet passed */
	IC_TOTAL_COUNT = 6,
};

/* Shield configuration flags (struct ic_shield_config.flags). */
enum ic_shield_flags {
	IC_SHIELD_F_DRY_RUN = 1, /* count and report, never drop */
};

/* Key of the IPv4 LPM tries (deny/allow rules, safety valve). */
struct ic_lpm_v4_key {
	__u32 prefixlen; /* host order, 0..=32 */
	__u8 addr[4];    /* network order */
};

/* Key of the IPv6 LPM tries. */
struct ic_lpm_v6_key {
	__u32 prefixlen; /* host order, 0..=128 */
	__u8 addr[16];   /* network order */
};

/* Value of a rule prefix. */
struct ic_rule {
	__u32 rule_id; /* host order; index into the per-rule counter array */
	__u8 action;   /* enum ic_action */
	__u8 _pad0[3];
};

/* Packet and byte counter (per CPU; user space sums the CPUs). */
struct ic_counter {
	__u64 packets; /* host order */
	__u64 bytes;   /* host order; L2 frame length as seen by XDP */
};

/* Runtime configuration of the Shield (array map with one entry). */
struct ic_shield_config {
	__u32 flags;   /* host order; enum ic_shield_flags */
	__u32 _pad0;
};

#endif /* IRONCLAD_ABI_H */
