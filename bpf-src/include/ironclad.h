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
	/* IPv4 fast path (DIR-24-8): blocks 0..65535 are the first level, one 256-entry
	 * block per /16 indexed by the third octet; blocks 65536.. are second-level groups,
	 * one per /24 whose longer prefixes a span node cannot describe, indexed by the
	 * fourth octet. Every other /24 that holds a prefix longer than /24 is a span node
	 * (struct ic_v4_span) in the slot's span table. */
	IC_SHIELD_V4_FIRST_BLOCKS = 65536,
	IC_SHIELD_V4_GROUPS = 4096,
	IC_SHIELD_V4_BLOCKS = 69632, /* IC_SHIELD_V4_FIRST_BLOCKS + IC_SHIELD_V4_GROUPS */
	/* Span nodes of a fast-path slot: one per /24 at most for each prefix allowed. A
	 * fixed size (8 MiB), so the lookup is an inlined array access, not a call. */
	IC_SHIELD_V4_SPANS = 1048576,
	/* IPv6 fast path: the records (struct ic_v6_node) of a slot's compiled table. Records
	 * 0..IC_SHIELD_V6_TOP_RECORDS-1 are the first level, six __u32 entries each (see
	 * enum ic_v6_fast); nodes and packed leaves follow. A fixed size (6.4 MiB), so every
	 * read is an inlined array access. */
	IC_SHIELD_V6_RECORDS = 278528,
	IC_SHIELD_V6_TOP_RECORDS = 98304, /* (IC_V6_GLOBAL_TOPS + 65536) / 6 */
	IC_SHIELD_SLOTS = 2,         /* policy slots: one active, one being built */
};

/* A fast-path entry (__u16, host order):
 *   0                              no rule;
 *   IC_FAST_GROUP | g              look up group g (second level, g < IC_SHIELD_V4_GROUPS);
 *   IC_FAST_GROUP | IC_FAST_SPAN [| IC_FAST_SPAN_BASE] | i
 *                                  span or bitmap node at record span_base[b] + i of the
 *                                  slot's span table,
 *                                  b = 1 with IC_FAST_SPAN_BASE (first-level blocks only);
 *   IC_FAST_VALVE                  management safety valve: pass;
 *   [IC_FAST_ALLOW |] rule_id      the longest matching rule (1..IC_SHIELD_MAX_RULES-1);
 *                                  deny unless IC_FAST_ALLOW is set.
 * A span node's inner and outer values are entries of the last two kinds. */
enum ic_fast_entry {
	IC_FAST_RULE_MASK = 0x3fff,
	IC_FAST_ALLOW = 0x4000,
	IC_FAST_VALVE = 0x4000, /* IC_FAST_ALLOW with rule id 0 */
	IC_FAST_GROUP = 0x8000,
	IC_FAST_GROUP_MASK = 0x1fff,
	IC_FAST_SPAN = 0x4000,      /* with IC_FAST_GROUP */
	IC_FAST_SPAN_BASE = 0x2000, /* with IC_FAST_GROUP | IC_FAST_SPAN */
	IC_FAST_SPAN_MASK = 0x1fff, /* 256 bitmap nodes of a block take 1,280 records */
};

/* The IPv6 fast path: a Poptrie (bitmap and rank) over 6-bit strides after a first level,
 * with lone-prefix nodes where a subtree holds one prefix.
 *   first level: one __u32 entry per /22 of 2000::/3 (the global unicast space, where
 *     feeds and countries are: entry (address bits 3..21)), then one per /16 of the rest
 *     (entry IC_V6_GLOBAL_TOPS + the top 16 bits), six to a record: entry t is
 *     __u32 t % 6 of record t / 6;
 *   first-level entry: IC_V6_NODE | record of the block's node (its stride starts at bit
 *     22, or 16 outside 2000::/3: the strides of both start at 16 + 6k), or a rule entry
 *     (enum ic_fast_entry: 0, IC_FAST_VALVE or [IC_FAST_ALLOW |] rule id);
 *   inner node: bits[0] has bit i set when stride value i leads to a child node, whose
 *     record is base[0] + (children set in bits 0..=i) - 1; bits[1] has bit i set where a
 *     run of equal leaves starts among the other values, and the leaf is entry
 *     base[1] + (runs started in bits 0..=i) - 1, counted in __u16 entries from record 0
 *     (eight to a record);
 *   lone node (IC_V6_LONE in base[0], the prefix length in its low 8 bits): addresses
 *     inside the prefix bits[0] (high 64 bits), bits[1] (low) read the entry in the low
 *     16 bits of base[1], every other address the high 16 bits. */
enum ic_v6_fast {
	IC_V6_NODE = 0x40000000,
	IC_V6_LONE = 0x40000000,
	IC_V6_INDEX_MASK = 0x3fffffff,
	IC_V6_LEN_MASK = 0xff,
	IC_V6_TOP_BITS = 16,	 /* first-level entries outside 2000::/3 */
	IC_V6_GLOBAL_BITS = 22,	 /* first-level entries inside 2000::/3 */
	IC_V6_GLOBAL_TOPS = 524288, /* 2000::/3's /22s: the first entries of the first level */
	IC_V6_TOPS_PER_RECORD = 6,
	IC_V6_STRIDE = 6,
	IC_V6_LEVELS = 19, /* 16 + 19 * 6 = 130 >= 128 */
	IC_V6_LEAVES_PER_RECORD = 8,
};

/* The Shield's active policy (map ic_shield_active, one __u32, host order). Writing it is
 * the one switch that moves every packet from one whole policy to another. */
enum ic_shield_active_bits {
	IC_ACTIVE_SLOT = 1,    /* which slot of the per-slot tables packets use */
	IC_ACTIVE_V4_TRIE = 2, /* IPv4 through the slot's LPM trie instead of the fast path */
	IC_ACTIVE_RATE_LIMIT = 4, /* a rate limit is configured (ic_shield_config.rate_pps) */
	IC_ACTIVE_V6_FAST = 8, /* IPv6 through the slot's compiled table instead of its LPM trie */
	/* Mirrors of the configuration, so a packet that matches a rule reads no more than
	 * this word to decide (ic_shield_config is read only when an event is sampled or a
	 * rate limit is set): */
	IC_ACTIVE_DRY_RUN = 16,          /* ic_shield_config.flags has IC_SHIELD_F_DRY_RUN */
	IC_ACTIVE_SAMPLE_SHIFT = 8,      /* bits 8..31: ic_shield_config.sample_rate */
	IC_ACTIVE_SAMPLE_MAX = 0xffffff, /* the largest sample rate the word holds */
};

/* Kinds of rules in the rule directory (struct ic_rule_info.kind). */
enum ic_rule_kind {
	IC_RULE_FREE = 0,
	IC_RULE_CIDR = 1, /* one prefix */
	IC_RULE_SET = 2,  /* a named set of prefixes (a feed, a country, ...) */
};

/* Index of the Shield's global totals (per-CPU array). */
enum ic_shield_total {
	IC_TOTAL_PASSED = 0,       /* packets that passed (incl. dry-run would-drops) */
	IC_TOTAL_DROPPED = 1,      /* packets dropped by a deny rule */
	IC_TOTAL_MALFORMED = 2,    /* truncated or malformed L2/L3 headers, passed */
	IC_TOTAL_VALVE = 3,        /* packets from a management (safety valve) source */
	IC_TOTAL_NON_IP = 4,       /* neither IPv4 nor IPv6 (ARP, LLDP, ...), passed */
	IC_TOTAL_WOULD_DROP = 5,   /* dry-run: a deny rule or the rate limit matched, passed */
	IC_TOTAL_RATE_LIMITED = 6, /* over the per-source rate limit (dropped unless dry-run) */
	IC_TOTAL_EVENTS_LOST = 7,  /* drop events the ring buffer had no room for */
	IC_TOTAL_EVENTS_OVER_BUDGET = 8, /* sampled drops not reported: over events_per_sec */
	IC_TOTAL_COUNT = 9,
};

/* Shield configuration flags (struct ic_shield_config.flags). */
enum ic_shield_flags {
	IC_SHIELD_F_DRY_RUN = 1, /* count and report, never drop */
};

/* Kinds of event records (struct ic_event_header.kind). */
enum ic_event_kind {
	IC_EVENT_SHIELD = 1, /* struct ic_shield_event */
	IC_EVENT_TLS = 2,    /* struct ic_tls_event */
	IC_EVENT_EGRESS = 3, /* struct ic_egress_event */
	IC_EVENT_DNS = 4,    /* struct ic_dns_event */
	IC_EVENT_SENTINEL = 5, /* struct ic_sentinel_event */
	IC_EVENT_PROCESS = 6,  /* struct ic_process_event */
	IC_EVENT_FIREWALL = 7, /* struct ic_fw_event */
	IC_EVENT_FLOW = 8,     /* struct ic_fw_flow_event */
	IC_EVENT_FW_LIMIT = 9, /* struct ic_fw_limit_event */
	IC_EVENT_DNS_POLICY = 10, /* struct ic_dns_policy_event */
	IC_EVENT_IDS_SNIPPET = 11, /* struct ic_ids_snippet (its own ring, read by the
				    * IDS matcher, not an event of its own) */
};

/* What the Shield did to a packet it reports (struct ic_shield_event.verdict). */
enum ic_shield_verdict {
	IC_VERDICT_DROP = 1,              /* dropped by a deny rule */
	IC_VERDICT_WOULD_DROP = 2,        /* dry-run: a deny rule matched */
	IC_VERDICT_RATE_LIMITED = 3,      /* dropped by the per-source rate limit */
	IC_VERDICT_WOULD_RATE_LIMIT = 4,  /* dry-run: over the rate limit */
};

/* Capacity of the Shield's event ring buffer, in bytes (a power of two). */
enum ic_shield_ring {
	IC_SHIELD_RING_BYTES = 262144,
	IC_SHIELD_RATE_SOURCES = 65536, /* sources tracked by the rate limiter (LRU) */
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

/* One block of the IPv4 fast path (value of the per-slot fast-path array). A first-level
 * block's span entries name their node relative to one of two bases: an edit writes a
 * block's new nodes and the base no entry uses, then the entries that use it, so a packet
 * reads either the old entry with the old base or the new entry with the new one. */
struct ic_v4_block {
	__u16 entry[256];     /* host order; enum ic_fast_entry */
	__u32 span_base[2];   /* host order; index into the slot's span table */
};

/* A span node: a /24 whose addresses read `inner` inside lo[0]..=hi[0] or lo[1]..=hi[1]
 * (last octet) and `outer` everywhere else. The commonest second level of a real feed
 * (one host or one run of hosts of the same rule in a /24) in 8 bytes instead of a
 * 512-byte group. With lo[0] > hi[0] (no span has that) it is the header of a node
 * of more records instead:
 *   lo[0] 1, a bitmap node: a /24 whose addresses take two values in any pattern (many
 *     hosts of one rule), `inner` where the address's bit is set, `outer` elsewhere;
 *     the 256 bits follow in the next four records as native __u64 words (address a:
 *     bit a % 64 of word a / 64). 40 bytes instead of a group's 512;
 *   lo[0] 2, a quad node: a /24 whose addresses take up to four values (hosts of two
 *     feeds, exceptions among them): values 0 and 1 are `inner` and `outer`, 2 and 3
 *     the first two __u16 of the next record; each address's value index is 2 bits of
 *     the eight records after those two (address a: bits 2 * (a % 32) of word a / 32).
 *     80 bytes;
 *   lo[0] 3, a runs node: `inner` inside up to five runs of the last octet (a few hosts
 *     of one rule), `outer` elsewhere: the first run is lo[1]..=hi[1], the others are
 *     (first, last) byte pairs in the next record (missing ones repeat the first).
 *     16 bytes;
 *   lo[0] 4, a leaf node: a /24 whose addresses take five values or more, when the
 *     second-level groups are all in use: its 256 entries are 64 records of four __u16
 *     each (address a: entry a % 4 of record a / 4) that start inner | outer << 16
 *     records after the header (after every other node, so that a block's headers stay
 *     within reach of its base). 520 bytes. */
struct ic_v4_span {
	__u8 lo[2];
	__u8 hi[2];
	__u16 inner; /* host order; enum ic_fast_entry, a rule or the valve */
	__u16 outer; /* host order */
};

/* The prefix book of a fast-path slot (user space only): the prefixes the table was
 * compiled from, so that a restarted agent can read the policy back and edit it. A byte
 * stream cut into pages (struct ic_book_page): runs of a header (struct ic_book_run)
 * followed by `count` addresses of that length, action and rule (4 bytes each for IPv4,
 * 16 for IPv6, network order); a header with `count` 0 ends it. A feed's million hosts
 * of one rule are one run, 4 bytes a prefix. An edit in place appends its changes after
 * the last run instead of writing the book again: later runs win over earlier ones for
 * the same prefix, and a run with action IC_BOOK_REMOVED (rule 0) removes its prefixes. */
enum ic_book {
	IC_BOOK_PAGE_BYTES = 4096,
	IC_BOOK_REMOVED = 0xff,
};

struct ic_book_run {
	__u32 count;     /* host order; addresses that follow */
	__u16 rule_id;   /* host order */
	__u8 prefixlen;
	__u8 action;     /* enum ic_action */
};

struct ic_book_page {
	__u8 data[IC_BOOK_PAGE_BYTES];
};

/* One record of the IPv6 fast path (see enum ic_v6_fast): a node, four first-level
 * entries, or eight leaves. */
struct ic_v6_node {
	__u64 bits[2]; /* host order */
	__u32 base[2]; /* host order */
};

/* What a rule id stands for (the rule directory, read by user space only). */
struct ic_rule_info {
	__u32 prefixes_v4; /* host order; prefixes of the rule loaded */
	__u32 prefixes_v6; /* host order */
	__u8 kind;         /* enum ic_rule_kind */
	__u8 action;       /* enum ic_action */
	__u8 prefixlen;    /* IC_RULE_CIDR: the prefix */
	__u8 family;       /* IC_RULE_CIDR: 4 or 6 */
	__u8 addr[16];     /* IC_RULE_CIDR: network order (IPv4 in the first 4 bytes) */
	char name[48];     /* IC_RULE_SET: NUL-padded name */
};

/* Packet and byte counter (per CPU; user space sums the CPUs). */
struct ic_counter {
	__u64 packets; /* host order */
	__u64 bytes;   /* host order; L2 frame length as seen by XDP */
};

/* One Shield total on one CPU (enum ic_shield_total). The totals that report events
 * (dropped, would-drop, rate-limited) keep the countdown to their next sampled event beside
 * their counter, so a drop reads one map value for both. */
struct ic_total {
	__u64 packets;   /* host order */
	__u64 bytes;     /* host order; L2 frame length as seen by XDP */
	__u32 countdown; /* kernel-private: events of this total until the next sampled one */
	__u32 _pad0;
};

/* Runtime configuration of the Shield (array map with one entry). */
struct ic_shield_config {
	__u32 flags;       /* host order; enum ic_shield_flags */
	__u32 sample_rate; /* host order; one event per N drops (per CPU and verdict); 0 = none;
			    * at most IC_ACTIVE_SAMPLE_MAX */
	__u32 rate_pps;    /* host order; token refill per second per source; 0 = no limit */
	__u32 rate_burst;  /* host order; bucket size in packets */
	__u32 events_per_sec; /* host order; at most this many events a second per CPU; 0 = no cap */
};

/* Common header of every record in every Ironclad ring buffer. */
struct ic_event_header {
	__u16 version;  /* host order; IC_ABI_VERSION */
	__u16 kind;     /* host order; enum ic_event_kind */
	__u32 size;     /* host order; size of the whole record, header included */
	__u64 ktime_ns; /* host order; bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
};

/* A sampled drop (or would-drop) reported by the Shield. */
struct ic_shield_event {
	struct ic_event_header hdr;
	__u8 src[16];  /* network order; IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d) */
	__u8 dst[16];  /* network order; IPv4 as IPv4-mapped IPv6 */
	__u32 rule_id; /* host order; 0 for rate limiting */
	__u32 ifindex; /* host order; ingress interface */
	__u32 pkt_len; /* host order; frame length */
	__u16 sport;   /* host order; 0 when not TCP/UDP or not found */
	__u16 dport;   /* host order; 0 when not TCP/UDP or not found */
	__u8 family;   /* 4 or 6 */
	__u8 proto;    /* IPPROTO_* of the L4 header (after IPv6 extension headers) */
	__u8 verdict;  /* enum ic_shield_verdict */
	__u8 _pad0[5];
};

/* TLS plaintext capture. */
enum ic_tls_direction {
	IC_TLS_WRITE = 1, /* SSL_write / SSL_write_ex: plaintext about to be encrypted */
	IC_TLS_READ = 2,  /* SSL_read / SSL_read_ex: plaintext just decrypted */
};

enum ic_tls_flags {
	IC_TLS_F_TRUNCATED = 1, /* the call moved more bytes than the cap let through */
	IC_TLS_F_LAST = 2,      /* the last chunk reported for this call */
};

enum ic_tls_limits {
	IC_TLS_CHUNK = 4096,         /* plaintext bytes per event at most */
	IC_TLS_SMALL_CHUNK = 256,    /* a chunk this short goes in a record cut after it */
	IC_TLS_MAX_CHUNKS = 64,      /* so at most 256 KiB reported per call */
	IC_TLS_SCOPE_ENTRIES = 4096, /* entries per scope map */
	IC_TLS_PROCESSES = 65536,    /* processes whose executable is tracked */
	IC_TLS_SOCKS = 16384,        /* SSL connections whose socket is remembered (LRU) */
};

/* Runtime configuration of TLS capture (array map with one entry). */
struct ic_tls_config {
	__u32 max_bytes;      /* host order; plaintext reported per call (<= 64 chunks) */
	__u32 bytes_per_sec;  /* host order; per-process budget per second; 0 = none */
};

/* Executable identity: the kernel's device number and inode. */
struct ic_exe_id {
	__u32 dev;   /* host order; kernel encoding (major << 20 | minor) */
	__u32 _pad0;
	__u64 ino;   /* host order */
};

/* The TCP connection an SSL call moved its bytes through: the socket the calling thread
 * sent on or received from while the call was in flight (fentry on tcp_sendmsg and
 * tcp_recvmsg), or, for a call that touched no socket (its bytes already decrypted and
 * buffered), the one an earlier call on the same SSL* used. family 0: not known (no TCP
 * socket was seen, e.g. a BIO over a pipe or a Unix socket). */
struct ic_tls_sock {
	__u8 family;     /* AF_INET, AF_INET6 (an IPv4-mapped address stays IPv6) or 0 */
	__u8 _pad0;
	__u16 lport;     /* host order; local port */
	__u16 rport;     /* host order; remote port */
	__u8 _pad1[2];
	__u8 laddr[16];  /* network order; IPv4 in the first 4 bytes, the rest zero */
	__u8 raddr[16];  /* network order; the same layout */
};

/* One chunk of TLS plaintext. Several chunks of one call share call_id. */
struct ic_tls_event {
	struct ic_event_header hdr;
	__u64 ssl;        /* host order; the SSL* pointer: a connection key */
	__u64 call_id;    /* host order; unique per SSL call on this boot */
	__u64 cgroup_id;  /* host order */
	__u32 pid;        /* host order; thread-group id */
	__u32 tid;        /* host order */
	__u32 uid;        /* host order */
	__u32 total_len;  /* host order; bytes the call moved */
	__u32 offset;     /* host order; offset of this chunk within the call's bytes */
	__u32 len;        /* host order; bytes of data in this chunk */
	__u8 direction;   /* enum ic_tls_direction */
	__u8 flags;       /* enum ic_tls_flags */
	__u8 _pad0[6];
	__u8 comm[16];
	struct ic_exe_id exe; /* the process's executable when the call was made (0 if unknown) */
	struct ic_tls_sock sock; /* the connection (family 0 if unknown) */
	/* A record whose chunk is at most IC_TLS_SMALL_CHUNK bytes ends after that many
	 * bytes of data (hdr.size says which): most calls move little, and a short record
	 * is cheaper to write and to read. */
	__u8 data[IC_TLS_CHUNK];
};

/* ---- Identity firewall (egress) ---- */

/* struct ic_egress_config's flags. */
enum ic_egress_config_flags {
	/* Every live rule names destinations, and every prefix they name is in the
	 * destination filter (the trie ic_egress_dst_trie, or the hash ic_egress_dst with
	 * IC_EGRESS_F_DST_HASH), each with its struct ic_egress_dst_owner: a destination in
	 * none of them cannot match any rule, and no identity key is looked up. */
	IC_EGRESS_F_DST_FILTER = 1,
	/* With IC_EGRESS_F_DST_FILTER: every prefix has one length (a feed's /32s, networks
	 * of one size), and the filter is the hash ic_egress_dst instead of the trie (one
	 * lookup, the length in ic_egress_dst_lengths): a trie of scattered /32s is some
	 * fourteen nodes deep for an address outside it. With lengths mixed it stays in
	 * the trie: measured, two hash lookups cost more than a trie's walk to a prefix
	 * alone in its branch. */
	IC_EGRESS_F_DST_HASH = 2,
	/* Domain rules or domain feeds are live (struct ic_dns_config): a connect() is
	 * also looked up in ic_dns_denied and ic_dns_addrs, and sockets that send to port
	 * 53 are marked so their DNS traffic is read. */
	IC_EGRESS_F_DOMAINS = 4,
};

/* The hashed destination filter (IC_EGRESS_F_DST_HASH). */
enum ic_egress_dst_limits {
	IC_EGRESS_DST_HASH_LENGTHS = 1, /* prefix lengths it takes, at most */
};

/* A prefix of the destination filter in the hash ic_egress_dst (value: struct
 * ic_egress_dst_owner). */
struct ic_egress_dst_key {
	__u8 generation;  /* 0 or 1 */
	__u8 prefixlen;   /* 0..128, over the IPv4-mapped address */
	__u8 _pad0[6];
	__u8 addr[16];    /* network order, the bits past prefixlen zero */
};

/* The prefix lengths of one generation's filter in ic_egress_dst (array by generation). */
struct ic_egress_dst_lengths {
	__u8 count;       /* 0..IC_EGRESS_DST_HASH_LENGTHS */
	__u8 prefixlen[7]; /* the first count are the lengths */
};

/* struct ic_egress_dst_owner's kind beside enum ic_egress_key_kind, and its classes'
 * value for "no rule". */
enum ic_egress_owner {
	IC_EGRESS_OWNERS_SEVERAL = 255, /* the rules of more than one key name the
					 * destination: each key is searched */
	IC_EGRESS_NO_CLASS = 0x7fffffff, /* none of the key's rules of that protocol
					  * names the destination */
};

enum ic_egress_limits {
	IC_EGRESS_MAX_RULES = 16384, /* rules per generation (index 0 unused) */
	IC_EGRESS_BUCKETS = 32768,   /* identity keys per generation */
	IC_EGRESS_CLASSES = 1048576, /* classes (bitmaps) per generation, all keys */
	IC_EGRESS_PROTOS = 3,        /* classifier buckets per key: tcp, udp, other */
	IC_EGRESS_IDENTITIES = 65536,/* identities tracked by the connect rate limiter */
	IC_EGRESS_MAX_ANCESTORS = 8, /* ancestors an ancestor rule can look at */
};

/* Which fields of struct ic_egress_rule must match (ic_egress_rule.match). */
enum ic_egress_match {
	IC_M_EXE = 1,
	IC_M_COMM = 2,
	IC_M_UID = 4,
	IC_M_CGROUP = 8,
	IC_M_DST = 16,
	IC_M_PORTS = 32,
	IC_M_PROTO = 64,
	IC_M_ANCESTOR = 128, /* one of the first ancestor_depth ancestors runs ancestor */
	IC_M_DOMAIN = 256,   /* the destinations are those DNS answers opened for the
			      * rule's dst_domain (ic_dns_rules; not in the classifier) */
};

/* What a rule, or the default, does (also the verdict of an event). */
enum ic_egress_action {
	IC_EGRESS_ALLOW = 1,
	IC_EGRESS_DENY = 2,
	IC_EGRESS_LOG = 3,          /* allow and report */
	IC_EGRESS_RATE_LIMITED = 4, /* verdict only: allowed by policy, over the rate limit */
};

/* Kinds of identity keys rules are indexed by (ic_egress_key.kind). */
enum ic_egress_key_kind {
	IC_KEY_ANY = 0, /* rules with no identity field */
	IC_KEY_EXE = 1,
	IC_KEY_COMM = 2,
	IC_KEY_UID = 3,
	IC_KEY_CGROUP = 4,
};

/* Which hook decided (ic_egress_event.hook). */
enum ic_egress_hook {
	IC_HOOK_CONNECT4 = 1,
	IC_HOOK_CONNECT6 = 2,
	IC_HOOK_SENDMSG4 = 3,
	IC_HOOK_SENDMSG6 = 4,
};

/* Totals of the egress firewall (per-CPU array). */
enum ic_egress_total {
	IC_ETOTAL_ALLOWED = 0,
	IC_ETOTAL_DENIED = 1,
	IC_ETOTAL_LOGGED = 2,
	IC_ETOTAL_RATE_LIMITED = 3,
	IC_ETOTAL_UNKNOWN_PROCESS = 4, /* the process's executable was not known */
	IC_ETOTAL_EVENTS_LOST = 5,
	IC_ETOTAL_COUNT = 6,
};

/* A process's executable as the kernel identifies it: the device of the inode's
 * superblock, the inode and its modification time (so a file rewritten in place is a
 * different executable). User space computes the same fields from a path with
 * ironclad_core::identity::exe_identity. */
struct ic_proc_exe {
	__u32 dev;        /* host order; kernel encoding (major << 20 | minor) */
	__u32 mtime_nsec; /* host order */
	__u64 ino;        /* host order */
	__s64 mtime_sec;  /* host order */
};

/* A process as the identity firewall's process table keeps it (value of the table,
 * keyed by thread-group id). Set on exec (and copied on fork, with the new parent). */
struct ic_proc_info {
	struct ic_proc_exe exe;
	__u32 ppid;       /* host order; parent's thread-group id */
	__u32 uid;        /* host order; at exec */
	__u32 gid;        /* host order; at exec */
	__u32 _pad0;
	__u64 cgroup_id;  /* host order; at exec */
	__u8 comm[16];    /* at exec */
	/* Start times in clock ticks since boot (IC_NSEC_PER_TICK), as /proc/PID/stat's
	 * field 22 gives them: the process's own and its parent's. A pid names one
	 * process only together with its start time: the ancestor walk follows ppid
	 * only to the entry whose start is pstart, never to a later process that reused
	 * the pid after the parent exited. */
	__u64 start;
	__u64 pstart;
};

/* Nanoseconds per clock tick of /proc (USER_HZ = 100 on x86-64 and arm64). */
#define IC_NSEC_PER_TICK 10000000ULL

/* One rule. All addresses IPv6 or IPv4-mapped IPv6. */
struct ic_egress_rule {
	__u32 rule_id;    /* host order; counter index */
	__u16 match;      /* host order; enum ic_egress_match flags */
	__u8 action;      /* enum ic_egress_action (allow, deny, log) */
	__u8 proto;       /* IPPROTO_TCP or IPPROTO_UDP when IC_M_PROTO */
	__u8 dst[16];     /* network order */
	__u8 prefixlen;   /* 0..=128 over the mapped address */
	__u8 _pad0;
	__u16 port_lo;    /* host order, inclusive */
	__u16 port_hi;    /* host order, inclusive */
	__u16 _pad1;
	__u32 uid;        /* host order */
	__u32 _pad2;
	__u64 cgroup_id;  /* host order */
	struct ic_proc_exe exe;
	__u8 comm[16];
	struct ic_proc_exe ancestor; /* IC_M_ANCESTOR: the ancestor's executable */
	__u8 ancestor_depth; /* 1 = the parent only .. IC_EGRESS_MAX_ANCESTORS */
	__u8 _pad3[7];
};

/* Key of the rule index: one identity value. */
struct ic_egress_key {
	__u8 kind;        /* enum ic_egress_key_kind */
	__u8 _pad0[7];
	__u8 value[24];   /* exe: struct ic_proc_exe; comm: 16 bytes; uid: u32; cgroup: u64 */
};

/* The rules of one identity key, compiled like the stateful firewall's
 * (ironclad_policy::firewall::Classifier, bit vectors): per protocol (tcp, udp,
 * other), the destination and the port each map to a class, a bitmap of the key's
 * rules in policy order, in the maps ic_egress_addr (tag: generation, protocol and
 * dimension, key id), ic_egress_ports, ic_egress_words and ic_egress_summaries; the
 * lowest bit of the AND whose rule also matches the rest of the caller's identity
 * decides. Bit b of protocol p of key id is rule slot ic_egress_slots[
 * generation << 31 | p << 29 | id << 14 | b]. */
struct ic_egress_bucket {
	__u32 id;    /* host order; the key's id in this generation, < IC_EGRESS_BUCKETS */
	__u32 rules; /* host order; how many rules the key has */
};

/* Runtime configuration (array map with one entry). */
struct ic_egress_config {
	__u32 generation;     /* the count of policy swaps: rule set generation & 1 is live;
			       * the whole count keys the verdict memo (ic_egress_memo), so a
			       * verdict is never taken from an earlier policy */
	__u8 default_action;  /* enum ic_egress_action: allow or deny */
	__u8 kinds;           /* bit k: the live rules have keys of enum ic_egress_key_kind
			       * k (the kinds with none are not looked up) */
	__u8 needs;           /* enum ic_egress_match flags: the caller's fields the live
			       * rules read (IC_M_EXE, IC_M_COMM, IC_M_CGROUP, IC_M_ANCESTOR);
			       * the others are read only when an event reports them */
	__u8 flags;           /* IC_EGRESS_F_* */
	__u32 rate_per_sec;   /* connect() attempts per second per identity; 0 = no limit */
	__u32 rate_burst;
};

/* A denied, rate-limited or logged connection attempt. */
struct ic_egress_event {
	struct ic_event_header hdr;
	__u64 cgroup_id;
	__u32 pid;        /* host order; thread-group id */
	__u32 tid;
	__u32 uid;
	__u32 rule_id;    /* 0 for the default action */
	struct ic_proc_exe exe;
	__u8 dst[16];     /* network order; IPv4 as IPv4-mapped */
	__u16 dport;      /* host order */
	__u8 proto;
	__u8 verdict;     /* enum ic_egress_action */
	__u8 hook;        /* enum ic_egress_hook */
	__u8 feed;        /* 1..IC_DNS_FEEDS: denied because a domain feed's name resolved
			   * to dst (rule_id is then 0); else 0 */
	__u8 note;        /* enum ic_egress_note: why an allowed attempt is reported */
	__u8 _pad0[1];
	__u8 comm[16];
};

/* Why an allowed connect() is reported (struct ic_egress_event.note). */
enum ic_egress_note {
	IC_EGRESS_NOTE_ENCRYPTED_DNS = 1, /* to port 853 (DNS over TLS or QUIC), or to port
					   * 443 of a known DNS-over-HTTPS resolver: names
					   * it resolves are not seen */
};

/* ---- Domain policy: egress rules by DNS name, domain feeds ----
 *
 * The addresses a rule's `dst_domain` opens come from the DNS answers the host's own
 * processes receive, read in the kernel (egress.bpf.c: ic_dns_out, ic_dns_in,
 * cgroup_skb) before the answer is queued to the socket: the first connect() after
 * the answer already finds its addresses. A name is compared by SipHash-1-3 (keyed,
 * ic_dns_config.key) of its labels, chained from the last: h(n) = 0, h(i) =
 * SipHash(le64(h(i+1)) || lowercase(label i)), so every suffix has a hash; a pattern
 * `example.com` is the hash of the whole name, `*.example.com` of a proper suffix. */
enum ic_dns_limits {
	IC_DNS_PATTERNS = 64,      /* distinct dst_domain patterns (bits of a mask) */
	IC_DNS_RULES = 64,         /* rule entries with dst_domain, per generation */
	IC_DNS_FEEDS = 16,         /* domain feeds (1-based ids) */
	IC_DNS_NAMES = 1048576,    /* patterns and feed names together */
	IC_DNS_ADDRS = 65536,      /* (executable, user, address) entries: a plain hash that
				    * user space sweeps of expired entries, never an LRU (a
				    * flood would evict what others' answers opened) */
	IC_DNS_PER_SCOPE = 16384,  /* entries one (executable, user) may hold */
	IC_DNS_PER_UID = 32768,    /* entries one user's executables may hold together */
	IC_DNS_OWNERS = 131072,    /* ic_dns_owners entries: a scope's and a user's counts */
	IC_DNS_DENIED = 32768,     /* live addresses of feed names (LRU) */
	IC_DNS_LABELS = 32,        /* labels of a name compared, from the last */
	IC_DNS_PENDING = 8,        /* queries outstanding per socket */
	IC_DNS_ANSWERS = 64,       /* answer records read per response, at most */
	IC_DNS_EVENT_ADDRS = 8,    /* addresses an event carries */
	IC_DNS_NAME_BYTES = 256,   /* a name in wire format, at most 255 */
	IC_DNS_MSG_BYTES = 4096,   /* bytes of a message read, at most */
	IC_DNS_ENCRYPTED = 256,    /* known DNS-over-HTTPS resolver addresses */
};

/* struct ic_dns_config's flags. */
enum ic_dns_flags {
	IC_DNS_F_ACTIVE = 1,       /* read DNS traffic (domain rules or feeds are live) */
};

/* The domain policy's settings (array map with one entry). */
struct ic_dns_config {
	__u64 key[2];        /* the SipHash key of name hashes (random, per load) */
	__u32 flags;         /* IC_DNS_F_* */
	__u32 grace_sec;     /* an answer's addresses stay open TTL + grace seconds */
	__u32 max_ttl_sec;   /* a TTL above this counts as this */
	__u32 block_feeds;   /* bit f: queries for feed f's names are dropped */
};

/* A name's entry in ic_dns_names (key: its hash, a __u64). */
struct ic_dns_name {
	__u64 exact;         /* pattern bits this whole name is */
	__u64 wild;          /* pattern bits `*.this`: names below it */
	__u8 feed_exact;     /* a feed (1-based) lists the name itself; 0 none */
	__u8 feed_wild;      /* a feed lists `*.this` */
	__u8 _pad0[6];
};

/* A rule entry with dst_domain (array ic_dns_rules, index generation * IC_DNS_RULES +
 * i, in policy order; slot 0 ends the list). */
struct ic_dns_rule {
	__u32 slot;          /* its slot in ic_egress_rules<generation> */
	__u32 _pad0;
	__u64 patterns;      /* the pattern bits it names */
};

/* Key of ic_dns_addrs: an address an answer carried, for the executable whose process
 * received the answer (zero if it was not known) and that process's user. */
struct ic_dns_addr_key {
	struct ic_proc_exe exe;
	__u8 addr[16];       /* network order; IPv4 as IPv4-mapped */
	__u32 uid;
	__u32 _pad0;
};

/* Key of ic_dns_owners: whose ic_dns_addrs entries a count is (value: __u64 count).
 * The kernel adds one per entry it creates; user space's sweep takes off what it
 * deletes. */
struct ic_dns_owner {
	struct ic_proc_exe exe; /* kind IC_DNS_OWNER_SCOPE; zero for IC_DNS_OWNER_UID */
	__u32 uid;
	__u32 kind;          /* enum ic_dns_owner_kind */
};

enum ic_dns_owner_kind {
	IC_DNS_OWNER_SCOPE = 0, /* one (executable, user): at most IC_DNS_PER_SCOPE */
	IC_DNS_OWNER_UID = 1,   /* one user, every executable: at most IC_DNS_PER_UID */
};

/* Value of ic_dns_addrs: when each pattern's opening of the address ends. */
struct ic_dns_addr {
	__u64 patterns;      /* bits ever set (an expired one stays set) */
	__u32 expires[IC_DNS_PATTERNS]; /* CLOCK_BOOTTIME seconds; 0 never opened */
};

/* Value of ic_dns_denied (key: the address, 16 bytes): an address a feed's name
 * resolved to. */
struct ic_dns_denial {
	__u32 expires;       /* CLOCK_BOOTTIME seconds */
	__u8 feed;           /* 1-based */
	__u8 _pad0[3];
};

/* A DNS query in flight on a socket (struct ic_dns_sock). */
struct ic_dns_pending {
	__u64 qhash;         /* the question's name hash */
	__u64 patterns;      /* the pattern bits its answer may open: the name's, of the
			      * rules that can match the socket's owner */
	__u8 server[16];     /* where it went; IPv4 as IPv4-mapped */
	__u16 txid;          /* host order */
	__u16 port;          /* host order */
	__u16 qtype;         /* host order */
	__u16 _pad0;
};

/* Socket storage of a socket that sent to port 53 (ic_dns_socks): who owns it, as of
 * its last connect() or sendmsg() there, and its queries in flight. */
struct ic_dns_sock {
	struct ic_proc_exe exe; /* zero if not known */
	__u32 tgid;
	__u32 uid;
	__u8 comm[16];
	__u32 next;          /* the pending slot the next query takes */
	__u32 ppid;          /* the rest of the owner's identity, as rules compare it */
	__u64 pstart;
	__u64 cgroup;
	__u32 known;         /* exe, ppid and pstart are known */
	__u32 _pad0;
	struct ic_dns_pending pending[IC_DNS_PENDING];
};

/* What user space wrote, for readers of the pins (status, metrics): the pattern of
 * each bit (array ic_dns_patterns, by bit) and the name of each feed (array
 * ic_dns_feed_names, by id). The programs never read them. */
struct ic_dns_label {
	__u8 used;           /* 0: no pattern or feed here */
	__u8 wildcard;       /* a pattern `*.name` */
	__u16 len;           /* bytes of text */
	__u32 _pad0;
	__u8 text[256];      /* the name, dotted, without `*.` (a feed: its name) */
};

/* Totals of the domain policy (per-CPU array). */
enum ic_dns_total {
	IC_DTOTAL_QUERIES = 0,       /* queries read */
	IC_DTOTAL_RESPONSES = 1,     /* responses that answered a query in flight */
	IC_DTOTAL_OPENED = 2,        /* addresses opened for domain rules */
	IC_DTOTAL_DENIED = 3,        /* addresses of feed names put on the deny list */
	IC_DTOTAL_UNSOLICITED = 4,   /* responses to no query of the socket (ignored) */
	IC_DTOTAL_MALFORMED = 5,     /* messages that could not be read (ignored) */
	IC_DTOTAL_OVERSIZED = 6,     /* answers past IC_DNS_MSG_BYTES or IC_DNS_ANSWERS
				      * records (the rest is ignored) */
	IC_DTOTAL_SPLIT = 7,         /* DNS over TCP not starting a message in one segment */
	IC_DTOTAL_QUERY_BLOCKED = 8, /* queries dropped (a feed's name, block_queries) */
	IC_DTOTAL_CONNECT_DENIED = 9,/* connect()s refused: the address is a feed name's */
	IC_DTOTAL_EVENTS_LOST = 10,
	IC_DTOTAL_UNTRACKED = 11,    /* responses on a socket that was never marked */
	IC_DTOTAL_ENCRYPTED = 12,    /* connect()s to encrypted DNS (reported, not read) */
	IC_DTOTAL_OUT_OF_SCOPE = 13, /* queries for a rule's name by a process no rule with
				      * it can match (their answers open nothing) */
	IC_DTOTAL_OWNER_FULL = 14,   /* addresses not opened: the executable or the user
				      * holds IC_DNS_PER_SCOPE / IC_DNS_PER_UID entries */
	IC_DTOTAL_TABLE_FULL = 15,   /* addresses not opened: ic_dns_addrs is full */
	IC_DTOTAL_COUNT = 16,
};

/* Per-feed counters (per-CPU array, index feed * IC_DNS_FEED_COUNTERS + counter). */
enum ic_dns_feed_counter {
	IC_DFEED_QUERIES = 0,        /* queries for its names */
	IC_DFEED_BLOCKED = 1,        /* of which dropped */
	IC_DFEED_ADDRESSES = 2,      /* addresses its names resolved to */
	IC_DFEED_CONNECTS = 3,       /* connect()s to them refused */
	IC_DNS_FEED_COUNTERS = 4,
};

/* What a struct ic_dns_policy_event reports. */
enum ic_dns_policy_what {
	IC_DNS_EV_ANSWER = 1,        /* a response opened addresses for domain rules */
	IC_DNS_EV_FEED_QUERY = 2,    /* a query for a feed's name (dropped or not) */
	IC_DNS_EV_FEED_ANSWER = 3,   /* a feed name's addresses put on the deny list */
};

/* A domain policy event: the process (the socket's owner), the server, the question
 * and, for answers, the addresses (the first IC_DNS_EVENT_ADDRS of naddrs). */
struct ic_dns_policy_event {
	struct ic_event_header hdr;
	__u32 pid;
	__u32 uid;
	struct ic_proc_exe exe;
	__u8 comm[16];
	__u8 server[16];     /* IPv4 as IPv4-mapped */
	__u64 patterns;      /* pattern bits the name matched */
	__u32 ttl;           /* the smallest TTL of the addresses, seconds (capped) */
	__u16 port;          /* the server's port */
	__u16 qtype;
	__u8 what;           /* enum ic_dns_policy_what */
	__u8 feed;           /* 1-based; 0 none */
	__u8 blocked;        /* the query was dropped */
	__u8 proto;          /* IPPROTO_UDP or IPPROTO_TCP */
	__u16 naddrs;        /* addresses in the answer (all of them, not only the first) */
	__u16 name_len;      /* bytes of name (wire format) */
	__u16 refused;       /* of the answer's addresses, those not opened (owner or table
			      * full: IC_DTOTAL_OWNER_FULL, IC_DTOTAL_TABLE_FULL) */
	__u8 _pad0[6];
	__u8 addrs[IC_DNS_EVENT_ADDRS][16];
	__u8 name[IC_DNS_NAME_BYTES]; /* the question's name, wire format, as sent */
};

/* ---- The process monitor: exec, fork and exit of every process ---- */

enum ic_process_limits {
	IC_PROC_PATH = 256,       /* bytes of the path as executed */
	IC_PROC_ARGS = 256,       /* bytes of the argument vector (NUL-separated) */
	IC_PROC_RING_BYTES = 1048576,
};

/* What happened to a process (struct ic_process_event.op). */
enum ic_process_op {
	IC_PROC_OP_EXEC = 1, /* a new program: path, arguments, executable */
	IC_PROC_OP_FORK = 2, /* a new process (not a new thread) */
	IC_PROC_OP_EXIT = 3, /* the last thread of the process ended */
};

/* Flags of struct ic_process_event. */
enum ic_process_flags {
	IC_PROC_F_PATH_TRUNCATED = 1, /* the path was longer than IC_PROC_PATH */
	IC_PROC_F_ARGS_TRUNCATED = 2, /* the arguments were longer than IC_PROC_ARGS */
	IC_PROC_F_SCRIPT = 4,         /* path names a script; exe is its interpreter */
};

/* Counters of the process monitor (per-CPU array). */
enum ic_process_stat {
	IC_PSTAT_EVENTS = 0, /* records written */
	IC_PSTAT_LOST = 1,   /* records the ring buffer had no room for */
	IC_PSTAT_COUNT = 2,
};

/* One exec, fork or exit, as the process monitor reports it. Fork and exit carry no path
 * or arguments (a forked child runs its parent's program until it executes one). */
struct ic_process_event {
	struct ic_event_header hdr;
	__u32 pid;        /* host order; thread-group id */
	__u32 ppid;       /* host order; the parent's thread-group id */
	__u32 uid;        /* host order */
	__u32 gid;        /* host order */
	__u64 cgroup_id;  /* host order */
	__u64 start_ns;   /* host order; the process's start, ns since boot (start_boottime) */
	struct ic_proc_exe exe; /* the executable (all zero if none: kernel threads) */
	__s32 exit_code;  /* host order; exit: the wait status (code << 8 | signal) */
	__u8 op;          /* enum ic_process_op */
	__u8 flags;       /* enum ic_process_flags */
	__u16 path_len;   /* host order; bytes of path used, NUL excluded */
	__u16 args_len;   /* host order; bytes of args used */
	__u8 _pad0[6];
	__u8 comm[16];    /* the process's (thread group leader's) command name */
	__u8 path[IC_PROC_PATH]; /* exec: the path as executed (argument of execve) */
	__u8 args[IC_PROC_ARGS]; /* exec: argv, NUL-separated, as the program sees it */
};

/* ---- Telemetry: bandwidth per process, DNS at the socket layer ---- */

enum ic_telemetry_limits {
	IC_DNS_CAPTURE = 512,  /* DNS payload bytes copied per packet, at most */
	IC_SOCKETS = 65536,    /* sockets whose owner is tracked */
};

enum ic_telemetry_dir {
	IC_DIR_OUT = 1, /* sent by the socket's owner */
	IC_DIR_IN = 2,  /* received by it */
};

/* Who created a socket (by socket cookie). */
struct ic_sock_owner {
	__u32 tgid;     /* host order */
	__u32 uid;      /* host order */
	__u8 comm[16];
};

/* Traffic of one process (by thread-group id). Bytes are IP packet lengths (IP and
 * transport headers included); payload is TCP/UDP payload only. */
struct ic_bandwidth {
	__u64 tx_bytes;
	__u64 tx_packets;
	__u64 tx_payload;
	__u64 rx_bytes;
	__u64 rx_packets;
	__u64 rx_payload;
	struct ic_proc_exe exe; /* the process's executable when first counted */
	__u8 comm[16];          /* its command name when first counted */
};

/* Runtime configuration of telemetry (array map with one entry). */
struct ic_telemetry_config {
	__u32 dns;        /* non-zero: report DNS packets */
	__u32 bandwidth;  /* non-zero: count bytes per process */
};

/* A DNS packet (UDP or TCP, port 53) sent or received by a process. */
struct ic_dns_event {
	struct ic_event_header hdr;
	__u32 pid;        /* host order; 0 if the socket's owner is unknown */
	__u32 uid;        /* host order */
	struct ic_proc_exe exe;
	__u8 comm[16];
	__u8 src[16];     /* network order; IPv4 as IPv4-mapped */
	__u8 dst[16];     /* network order; IPv4 as IPv4-mapped */
	__u16 sport;      /* host order */
	__u16 dport;      /* host order */
	__u8 proto;       /* IPPROTO_UDP or IPPROTO_TCP (payload starts with a 2-byte length) */
	__u8 direction;   /* enum ic_telemetry_dir */
	__u8 _pad0[2];
	__u32 len;        /* host order; payload bytes in data */
	__u32 total;      /* host order; payload bytes in the packet */
	__u8 data[IC_DNS_CAPTURE];
};

/* ---- Sentinel: BPF-LSM self-defense and file integrity ---- */

/* What the Sentinel knows about an inode (struct ic_sentinel_node.flags). */
enum ic_sentinel_node_flags {
	IC_SEN_PROTECT = 1,   /* changes refused to everyone but the agent and update manager */
	IC_SEN_MONITOR = 2,   /* changes reported (and allowed unless also protected) */
	IC_SEN_TREE = 4,      /* a directory whose PROTECT/MONITOR apply to all below it */
	IC_SEN_ANCESTOR = 8,  /* a directory above a protected path: no mount over it, no rename */
	IC_SEN_AGENT = 16,    /* the agent's executable */
	IC_SEN_AGENT_DIR = 32,/* a protected directory whose executables are agent builds */
	IC_SEN_MANAGER = 64,  /* the update manager's executable */
};

/* Operations the Sentinel reports (struct ic_sentinel_event.op). */
enum ic_sentinel_op {
	IC_SEN_OP_OPEN_WRITE = 1, /* open for writing (or O_TRUNC / O_APPEND) */
	IC_SEN_OP_WRITE = 2,      /* write(2) and friends on an open file */
	IC_SEN_OP_TRUNCATE = 3,   /* truncate(2) */
	IC_SEN_OP_UNLINK = 4,
	IC_SEN_OP_RMDIR = 5,
	IC_SEN_OP_RENAME = 6,     /* to or from */
	IC_SEN_OP_LINK = 7,       /* a hard link to, or in */
	IC_SEN_OP_CREATE = 8,     /* a new file, directory, node or symlink */
	IC_SEN_OP_CHMOD = 9,
	IC_SEN_OP_CHOWN = 10,
	IC_SEN_OP_XATTR = 11,     /* setxattr / removexattr */
	IC_SEN_OP_MOUNT = 12,     /* mount or move_mount onto the path */
	IC_SEN_OP_BPF_MAP = 13,   /* a writable fd to a protected map */
	IC_SEN_OP_BPF_LINK = 14,  /* an fd to, or detaching/updating, a protected link */
	/* 15 is not used */
	IC_SEN_OP_SIGNAL = 16,    /* a signal to the agent (arg: the signal) */
	IC_SEN_OP_PTRACE = 17,    /* ptrace attach, /proc/pid/mem, pidfd_getfd (arg: mode) */
	IC_SEN_OP_REGISTER = 18,  /* the agent registration handshake */
	IC_SEN_OP_TC = 19,        /* a tc filter, chain or clsact qdisc change, or a tcx
				   * attach, on a protected interface (arg: ifindex) */
};

/* What the Sentinel did (struct ic_sentinel_event.verdict). */
enum ic_sentinel_verdict {
	IC_SEN_DENIED = 1,     /* refused with EPERM */
	IC_SEN_ALLOWED = 2,    /* allowed and reported (monitored path, or the agent) */
	IC_SEN_WOULD_DENY = 3, /* monitor-only mode: would have been refused */
	IC_SEN_REGISTERED = 4, /* the agent registered */
};

/* Kinds of protected BPF objects (struct ic_bpf_object_key.kind). */
enum ic_bpf_object_kind {
	IC_BPF_MAP = 1,
	IC_BPF_PROG = 2,
	IC_BPF_LINK = 3,
	IC_BPF_IFACE = 4, /* an interface carrying protected tc programs (id: ifindex) */
	IC_BPF_NETNS = 5, /* the network namespace of those interfaces (id: its inode) */
};

enum ic_sentinel_limits {
	IC_SEN_NODES = 65536,        /* inodes the Sentinel knows */
	IC_SEN_OBJECTS = 4096,       /* protected BPF objects */
	IC_SEN_DEPTH = 16,           /* directory levels searched for a protected tree */
	IC_SEN_NAME = 64,            /* bytes of a file name reported */
	IC_SEN_RING_BYTES = 262144,  /* event ring buffer */
	IC_SEN_PRCTL_REGISTER = 0x49434c44, /* prctl option of the handshake ("ICLD") */
};

/* Sentinel configuration flags (struct ic_sentinel_config.flags). */
enum ic_sentinel_flags {
	IC_SEN_F_ENFORCE = 1, /* refuse; without it, report what would be refused */
};

/* Key of the inode map: the kernel's identity of an inode. */
struct ic_inode_key {
	__u64 ino; /* host order */
	__u32 dev; /* host order; kernel encoding (major << 20 | minor) */
	__u32 _pad0;
};

/* Value of the inode map. */
struct ic_sentinel_node {
	__u32 flags; /* host order; enum ic_sentinel_node_flags */
	__u32 _pad0;
};

/* Key of the protected-object map. */
struct ic_bpf_object_key {
	__u32 kind; /* host order; enum ic_bpf_object_kind */
	__u32 id;   /* host order; the kernel's map/prog/link id */
};

/* Runtime configuration (array map with one entry). */
struct ic_sentinel_config {
	__u32 flags; /* host order; enum ic_sentinel_flags */
	__u32 _pad0;
};

/* Shared state (array map with one entry). */
struct ic_sentinel_state {
	__u64 agent_tgid;    /* host order; the registered agent, 0 = none (64 bits for the
			      * compare-and-swap that claims it) */
	__u64 registered_ns; /* host order; bpf_ktime_get_ns() of the registration */
};

/* What the kernel remembers about the registered agent (task storage of its thread-group
 * leader): the executable it registered with, so an exec ends its rights. */
struct ic_agent_mark {
	struct ic_exe_id exe;
};

/* A protected or monitored operation. */
struct ic_sentinel_event {
	struct ic_event_header hdr;
	__u32 pid;        /* host order; the actor's thread-group id */
	__u32 tid;        /* host order */
	__u32 uid;        /* host order */
	__u32 target_pid; /* host order; signal/ptrace target, else 0 */
	__u16 op;         /* host order; enum ic_sentinel_op */
	__u8 verdict;     /* enum ic_sentinel_verdict */
	__u8 _pad0;
	__u32 arg;        /* host order; signal, ptrace mode, map/link id, open flags */
	struct ic_exe_id exe;    /* the actor's executable (dev 0 for kernel threads) */
	struct ic_exe_id target; /* the inode acted on (0 if none yet, e.g. a new file) */
	struct ic_exe_id parent; /* its directory */
	__u8 comm[16];           /* the actor's comm */
	__u8 name[IC_SEN_NAME];  /* the target's name in its directory, NUL-terminated */
};

/* ---- Stateful firewall: connection tracking (bpf-src/firewall.bpf.c) ---- */

/* Connection states (struct ic_ct_entry.state). TCP walks SYN_SENT -> SYN_RECV ->
 * ESTABLISHED -> FIN_WAIT (one side sent FIN) -> CLOSING (both sides, or RST); UDP and
 * ICMP echo are NEW until the other side answers, then ESTABLISHED. */
enum ic_ct_state {
	IC_CT_NEW = 0,         /* UDP/ICMP: one direction seen */
	IC_CT_SYN_SENT = 1,    /* TCP: SYN seen */
	IC_CT_SYN_RECV = 2,    /* TCP: SYN-ACK seen */
	IC_CT_ESTABLISHED = 3, /* TCP: handshake done; UDP/ICMP: answered */
	IC_CT_FIN_WAIT = 4,    /* TCP: one side closed */
	IC_CT_CLOSING = 5,     /* TCP: both sides closed, or reset */
	IC_CT_STATE_COUNT = 6,
};

/* A connection's key: its two ends in a canonical order (the lower address, then port,
 * first), so both directions of a flow find the same entry with one lookup. IPv4
 * addresses are IPv4-mapped IPv6 (::ffff:a.b.c.d). ICMP echo uses the identifier as
 * both ports. */
struct ic_ct_key {
	__u8 addr_lo[16]; /* network order */
	__u8 addr_hi[16]; /* network order */
	__u16 port_lo;    /* host order */
	__u16 port_hi;    /* host order */
	__u8 proto;       /* IPPROTO_TCP/UDP/ICMP/ICMPV6 */
	__u8 _pad0[3];
};

/* Flags of a connection (struct ic_ct_entry.flags). */
enum ic_ct_flags {
	IC_CT_F_ORIG_LO = 1,   /* the side that opened it is addr_lo/port_lo */
	IC_CT_F_INBOUND = 2,   /* opened from outside (seen first by the ingress program) */
	IC_CT_F_FIN_LO = 4,    /* addr_lo sent FIN */
	IC_CT_F_FIN_HI = 8,    /* addr_hi sent FIN */
	IC_CT_F_RECORD = 16,   /* report its end as a flow record (its start was reported) */
	IC_CT_F_RESET = 32,    /* a RST closed it */
	IC_CT_F_INSPECT = 64,  /* selected for the IDS: its payload goes to user space
				* (ic_ids_flows holds how much, and whether it is blocked) */
	IC_CT_F_WINDOW = 128,  /* both sides' sequence numbers and windows are known: a RST
				* or FIN outside the window is invalid */
};

/* Limits of the window check (struct ic_ct_entry.wscale, seq_end, max_win). */
enum ic_ct_window_limits {
	IC_CT_WSCALE_NONE = 0xff,       /* the side's SYN offered no window scale */
	IC_CT_MIN_WINDOW = 65535,       /* a receiver's window before it advertised one */
	IC_CT_MAX_WINDOW = 1073725440,  /* the largest a side can advertise: 65535 << 14 */
};

/* A tracked connection (hash map ic_fw_ct, keyed by struct ic_ct_key). Counters are
 * updated without atomics: two CPUs updating one flow at the same instant can lose an
 * increment (packets of one flow normally stay on one CPU). */
struct ic_ct_entry {
	__u64 created_ns;   /* host order; bpf_ktime_get_ns() */
	__u64 last_seen_ns; /* host order */
	__u64 packets_orig; /* host order; from the side that opened it */
	__u64 bytes_orig;
	__u64 packets_reply;
	__u64 bytes_reply;
	__u64 cgroup_id;    /* host order; the local socket's cgroup when the host opened
			     * it (its first packet left through a socket), or the
			     * accepting process's (see pid); else 0 */
	__u32 ifindex;      /* host order; where it was first seen */
	__u32 rule_id;      /* host order; the rule that admitted it; 0: the default */
	__u32 pid;          /* host order; the process that sent its first packet, when the
			     * host opened it; opened from outside (TCP), the process that
			     * accepted it, where the accept hook runs; else 0 */
	__u8 state;         /* enum ic_ct_state */
	__u8 flags;         /* enum ic_ct_flags */
	__u8 wscale[2];     /* TCP: each side's window scale ([0] addr_lo's, [1] addr_hi's);
			     * IC_CT_WSCALE_NONE: its SYN offered none */
	__u32 seq_end[2];   /* TCP, host order: each side's next sequence number, after the
			     * last data, SYN or FIN it sent inside the window */
	__u32 max_win[2];   /* TCP, host order: the largest window each side advertised, in
			     * bytes (scaled) */
};

/* Firewall totals (per-CPU array, indexed by this enum). */
enum ic_fw_total {
	IC_FW_ESTABLISHED = 0,  /* packets of a tracked connection, passed */
	IC_FW_RELATED = 1,      /* ICMP errors quoting a tracked connection, passed */
	IC_FW_NEW_ACCEPTED = 2, /* packets that opened a connection */
	IC_FW_DROPPED = 3,      /* new connections the default policy dropped */
	IC_FW_INVALID = 4,      /* belong to no connection and cannot open one (bare ACK...) */
	IC_FW_TABLE_FULL = 5,   /* new connections dropped: no room in the table */
	IC_FW_UNTRACKED = 6,    /* not tracked (not TCP/UDP/ICMP, fragments, ND) and passed */
	IC_FW_WOULD_DROP = 7,   /* dry-run: would have been dropped, passed */
	IC_FW_NON_IP = 8,       /* neither IPv4 nor IPv6, passed */
	IC_FW_REJECTED = 9,     /* dropped by a reject rule and answered (TCP RST, ICMP
				 * port unreachable) */
	IC_FW_RATE_LIMITED = 10, /* matched a rule whose rate limit was spent: dropped */
	IC_FW_EVENTS_LOST = 11,  /* log events the ring buffer had no room for */
	IC_FW_SYN_COOKIES = 12,  /* SYNs to protected ports answered with a cookie (XDP) */
	IC_FW_COOKIE_ACCEPTED = 13, /* handshakes completed with a valid cookie, handed to
				     * the listener as new connections */
	IC_FW_COOKIE_INVALID = 14,  /* ACKs to protected ports with no connection and no
				     * valid cookie: dropped (within invalid) */
	IC_FW_LIMIT_SOURCE_DROPS = 15,    /* new inbound connections over the per-source
					   * limit (firewall.limits): dropped */
	IC_FW_LIMIT_SUBNET_DROPS = 16,    /* over the per-subnet (/24, /64) limit */
	IC_FW_LIMIT_PORT_DROPS = 17,      /* over the per-destination-port limit */
	IC_FW_LIMIT_INTERFACE_DROPS = 18, /* over the interface's ceiling */
	IC_FW_NAT_TRANSLATED = 19,  /* packets rewritten by NAT (either direction) */
	IC_FW_NAT_NO_PORT = 20,     /* new connections a source translation found no free
				     * port for: dropped */
	IC_FW_NAT_FAILED = 21,      /* translations the kernel could not write (a full
				     * table, a rewrite that failed): dropped */
	IC_FW_IDS_SNIPPETS = 22,    /* payload snippets handed to the IDS matcher */
	IC_FW_IDS_LOST = 23,        /* snippets its ring buffer had no room for */
	IC_FW_IDS_BLOCKED = 24,     /* packets of flows a `drop` IDS rule blocked: dropped */
	IC_FW_IDS_KERNEL_MATCHED = 25, /* first payload packets a `drop` rule's prefix
					* matched in the kernel: dropped, the flow blocked */
	IC_FW_TOTAL_COUNT = 26,
};

/* Firewall configuration flags (struct ic_fw_config.flags). */
enum ic_fw_flags {
	IC_FW_F_DROP_IN = 1,   /* default_inbound: drop */
	IC_FW_F_DROP_OUT = 2,  /* default_outbound: drop */
	IC_FW_F_STATEFUL = 4,  /* track connections; drop invalid packets */
	IC_FW_F_DRY_RUN = 8,   /* count and report, never drop */
	IC_FW_F_FLOWS = 16,    /* flow records for every connection, not only flow rules' */
};

/* Firewall rules, compiled by ironclad_policy::firewall::Classifier (bit vectors):
 * rules are split into buckets by direction and protocol; in a bucket, each dimension
 * (source, destination, source port, destination port or ICMP type) maps a packet's
 * value to a class, the set of the bucket's rules that accept it, as a bitmap; the
 * packet's rule is the lowest bit of the four bitmaps' AND. Everything is written to
 * the slot packets do not use, then ic_fw_config.slot flips. */
enum ic_fw_limits {
	IC_FW_SLOTS = 2,
	IC_FW_PROTOS = 5,            /* tcp, udp, icmp, icmpv6, other */
	IC_FW_BUCKETS = 10,          /* direction (in, out) x protocol */
	IC_FW_MAX_RULES = 16384,     /* per bucket */
	IC_FW_SUMMARY_WORDS = 4,     /* 4 x 64 bitmap words x 64 rules = IC_FW_MAX_RULES */
	IC_FW_MAX_PREFIXES = 1048576,
	IC_FW_MAX_PIECES = 1048576,
	IC_FW_MAX_WORDS = 4194304,
	IC_FW_NO_MASK = 0,           /* ic_fw_untranslated: no rule of the bucket has `dnat: true` */
	IC_FW_MAX_CLASSES = 1048576,
};

/* Dimensions of a bucket (the third byte of a class key's tag). */
enum ic_fw_dim {
	IC_FW_DIM_SRC = 0,
	IC_FW_DIM_DST = 1,
	IC_FW_DIM_SPORT = 2,
	IC_FW_DIM_DPORT = 3, /* the ICMP type in the ICMP buckets */
};

/* Address classes (LPM trie ic_fw_addr): the tag (slot, bucket, dimension, 0) is the
 * first 32 bits of every prefix, so one trie holds every bucket of both slots. */
struct ic_fw_addr_key {
	__u32 prefixlen; /* host order; 32 + 0..128 */
	__u8 tag[4];     /* slot, bucket, enum ic_fw_dim, 0 */
	__u8 addr[16];   /* network order; IPv4 as IPv4-mapped IPv6 */
};

/* Port and ICMP-type classes (LPM trie ic_fw_ports): each piece of the value space is
 * written as the aligned prefixes that cover it. */
struct ic_fw_port_key {
	__u32 prefixlen; /* host order; 32 + 0..16 */
	__u8 tag[4];     /* slot, bucket, enum ic_fw_dim, 0 */
	__u8 port[2];    /* network order */
	__u8 _pad0[2];
};

/* One 64-rule word of a class bitmap (hash ic_fw_words; absent words are zero). */
struct ic_fw_word_key {
	__u32 class_id; /* host order */
	__u16 word;     /* host order */
	__u8 slot;
	__u8 _pad0;
};

/* A class's summary: bit w set when bitmap word w is not zero (hash ic_fw_summaries,
 * keyed by slot << 32 | class id). */
struct ic_fw_summary {
	__u64 words[IC_FW_SUMMARY_WORDS]; /* host order */
};

/* (Identity firewall; here, after struct ic_fw_summary, which it holds.) What the
 * destination filter knows of the destinations whose longest prefix among every live
 * rule's is this entry's (the key in ic_egress_dst or ic_egress_dst_trie): when the
 * rules naming them all belong to one identity key, that key and its destination class
 * per protocol, with the class's summary. A connection there is decided without the
 * key's index entry, destination trie or summary: its caller has the key's identity or
 * no rule can match. The writer computes it: every address of the region has the same
 * class, that of the key's longest prefix containing the entry's. */
struct ic_egress_dst_owner {
	__u8 kind;        /* enum ic_egress_key_kind, or IC_EGRESS_OWNERS_SEVERAL */
	__u8 _pad0;
	__u16 id;         /* host order; the key's id (struct ic_egress_bucket) */
	__u32 classes[3]; /* host order; per protocol (tcp, udp, other): the key's class
			   * of these destinations, or IC_EGRESS_NO_CLASS */
	__u8 value[24];   /* the key's value, as in struct ic_egress_key */
	struct ic_fw_summary summaries[3]; /* each class's summary (zero for none) */
};

/* Rule actions (struct ic_fw_rule.action). */
enum ic_fw_action {
	IC_FW_ACCEPT = 0,
	IC_FW_DROP = 1,
	IC_FW_REJECT = 2, /* drop and answer: a TCP RST, or ICMP port unreachable for UDP */
};

/* A bucket's rule at bit i (hash ic_fw_rules, keyed by
 * (slot * IC_FW_BUCKETS + bucket) * IC_FW_MAX_RULES + i). */
/* Rule flags (struct ic_fw_rule.flags). */
enum ic_fw_rule_flags {
	IC_FW_RULE_LOG = 1,   /* report every match (struct ic_fw_event) */
	IC_FW_RULE_FLOWS = 2, /* flow records for the connections it admits */
};

struct ic_fw_rule {
	__u32 rule_id;      /* host order; 1-based, the per-rule counter's index */
	__u8 action;        /* enum ic_fw_action */
	__u8 flags;         /* enum ic_fw_rule_flags */
	__u8 _pad0[2];
	__u32 rate_per_sec; /* host order; 0: no rate limit; else new connections (or
			     * untracked packets) per second the rule lets through */
	__u32 rate_burst;   /* host order; the bucket's size */
	__u64 digest;       /* host order; the rule's identity, so its id (and counters)
			     * survive a replacement that keeps it */
};

/* What a logged match did (struct ic_fw_event.flags). */
enum ic_fw_event_flags {
	IC_FW_EV_RATE_LIMITED = 1, /* over the rule's rate limit: dropped */
	IC_FW_EV_DRY_RUN = 2,      /* dry-run: a drop or reject was only counted */
	IC_FW_EV_INBOUND = 4,      /* arriving on the interface (else leaving) */
};

/* Capacity of the firewall's event ring buffer, in bytes (a power of two). */
enum ic_fw_ring {
	IC_FW_RING_BYTES = 262144,
};

/* A logged rule's match (rules with `log: true`): the first packet of a new
 * connection, or an untracked packet. */
struct ic_fw_event {
	struct ic_event_header hdr;
	__u8 src[16];  /* network order; IPv4 as IPv4-mapped */
	__u8 dst[16];  /* network order; IPv4 as IPv4-mapped */
	__u32 rule_id; /* host order */
	__u32 ifindex; /* host order */
	__u16 sport;   /* host order; 0 for ICMP */
	__u16 dport;   /* host order; the ICMP type for ICMP */
	__u8 proto;
	__u8 action;   /* enum ic_fw_action: the rule's */
	__u8 flags;    /* enum ic_fw_event_flags */
	__u8 _pad0;
};

/* Flags of a flow record (struct ic_fw_flow_event.flags). */
enum ic_fw_flow_flags {
	IC_FW_FLOW_INBOUND = 1, /* opened from outside (else by the host) */
};

/* Which end of a connection a flow record reports (struct ic_fw_flow_event.phase). */
enum ic_fw_flow_phase {
	IC_FW_FLOW_START = 1,
	IC_FW_FLOW_END = 2,
};

/* Why a connection ended (struct ic_fw_flow_event.reason; 0 at the start). */
enum ic_fw_flow_end {
	IC_FW_END_TIMEOUT = 1, /* idle longer than its state's timeout */
	IC_FW_END_FIN = 2,     /* both sides sent FIN */
	IC_FW_END_RESET = 3,   /* a RST */
};

/* A flow record: a connection's start or end, for connections admitted by a rule with
 * `flows: true` (or every connection with the section's `flows: true`). Starts come
 * from the programs; ends from user space's sweep when the entry goes (or from the
 * programs when a new connection takes an ended one's place first). The process is
 * the one that sent the first packet when the host opened the connection through a
 * socket; 0 otherwise (inbound, forwarded). */
struct ic_fw_flow_event {
	struct ic_event_header hdr;
	__u8 src[16];        /* network order; the side that opened it; IPv4 as IPv4-mapped */
	__u8 dst[16];        /* network order */
	__u64 cgroup_id;     /* host order; the local socket's cgroup, or 0 */
	__u64 created_ns;    /* host order; CLOCK_MONOTONIC */
	__u64 last_seen_ns;  /* host order */
	__u64 packets_orig;  /* host order; from the side that opened it */
	__u64 bytes_orig;
	__u64 packets_reply; /* host order; from the other side */
	__u64 bytes_reply;
	__u32 rule_id;       /* host order; 0: admitted by the default policy */
	__u32 ifindex;       /* host order */
	__u32 pid;           /* host order; thread-group id, or 0 */
	__u16 sport;         /* host order; the echo identifier for ICMP */
	__u16 dport;         /* host order; the echo identifier for ICMP */
	__u8 proto;
	__u8 flags;          /* enum ic_fw_flow_flags */
	__u8 phase;          /* enum ic_fw_flow_phase */
	__u8 reason;         /* enum ic_fw_flow_end; 0 at the start */
	__u8 state;          /* enum ic_ct_state */
	__u8 _pad0[3];
	__u8 comm[16];       /* the process's command name when pid is set */
};

/* A rate-limited rule's token bucket (hash ic_fw_rate, keyed by rule id; tokens in
 * nano-connections), kept across replacements like the rule's counters. */
struct ic_fw_bucket {
	__s64 tokens;
	__u64 last_ns;
};

/* Sampled reports of the packets the default policy drops (firewall.log_default_drops;
 * array map ic_fw_default_log, one entry): a token bucket of per_sec reports a second. */
struct ic_fw_default_log {
	__u32 per_sec; /* host order; 0: no reports */
	__u32 _pad0;
	__s64 tokens;  /* nanosecond-scaled tokens, as struct ic_fw_bucket */
	__u64 last_ns;
};

/* Runtime configuration of the firewall (array map with one entry). Timeouts in
 * seconds, indexed by enum ic_ct_state for TCP; UDP and ICMP have their own. */
struct ic_fw_config {
	__u32 flags;                          /* host order; enum ic_fw_flags */
	__u32 slot;                           /* host order; the rule slot packets use */
	__u32 tcp_timeout[IC_CT_STATE_COUNT]; /* host order; seconds per TCP state */
	__u32 udp_timeout;                    /* host order; seconds, one direction seen */
	__u32 udp_stream_timeout;             /* host order; seconds, answered */
	__u32 icmp_timeout;                   /* host order; seconds */
};

/* SYN-flood defence (firewall.syn_flood): SYNs to protected TCP ports are answered by
 * the firewall's XDP program (ic_fw_syn) with a SYN-ACK whose sequence number is the
 * kernel's own SYN cookie (bpf_tcp_raw_gen_syncookie_ipv4/6); nothing is stored. The
 * client's ACK is checked at tcx ingress (bpf_tcp_raw_check_syncookie_ipv4/6), decided
 * by the rules as a new connection, and handed to the listening socket as a request
 * (bpf_sk_assign_tcp_reqsk), which the kernel turns into an established socket. */
enum ic_syn_mode {
	IC_SYN_OFF = 0,
	IC_SYN_ALWAYS = 1,       /* every SYN to a protected port gets a cookie */
	IC_SYN_UNDER_ATTACK = 2, /* only while SYNs to protected ports exceed threshold_pps */
};

enum ic_syn_limits {
	IC_SYN_PORT_WORDS = 1024, /* ic_fw_syn_ports: 1024 words x 64 bits, one per port */
	IC_SYN_TS_WSCALE_NONE = 15, /* timestamp bits 0-3: the client's window scale, or
				     * this when it offered none */
	IC_SYN_TS_SACK = 16,        /* timestamp bit 4: the client offered SACK */
	IC_SYN_TS_BITS = 32,        /* options kept in the low 5 bits of our timestamp */
};

/* The SYN-flood defence's configuration (array map ic_fw_syn_config, one entry). */
struct ic_syn_config {
	__u32 mode;          /* host order; enum ic_syn_mode */
	__u32 threshold_pps; /* host order; under_attack: SYNs a second to protected ports
			      * (all sources, all CPUs) from which cookies answer */
	__u32 hold_ms;       /* host order; under_attack: cookies keep answering this long
			      * after the rate last exceeded the threshold */
	__u16 mss4;          /* host order; the MSS our IPv4 SYN-ACKs announce */
	__u16 mss6;          /* host order; the MSS our IPv6 SYN-ACKs announce */
	__u8 wscale;         /* the window scale our SYN-ACKs announce (when offered one) */
	__u8 _pad0[3];
};

/* The SYN rate the XDP program measures (array map ic_fw_syn_state, one entry shared
 * by every CPU, updated with atomic adds). */
struct ic_syn_state {
	__u64 window_ns;       /* host order; CLOCK_MONOTONIC start of the current second */
	__u64 window_syns;     /* host order; SYNs to protected ports in it */
	__u64 attack_until_ns; /* host order; under_attack: cookies answer until then */
	__u64 attacks;         /* host order; times the threshold was crossed */
};

/* Rate limits on new inbound connections (firewall.limits). A connection the rules
 * admit (its first packet: a TCP SYN, or the ACK that completes a cookie handshake; a
 * UDP flow's first datagram; an echo request) takes a token from each configured
 * limit, narrowest first: its source address, its source subnet, its destination
 * port, its interface. The first limit with no token left drops it (dry-run: counts it
 * as would-drop and passes it) and the wider ones are not charged. Token buckets,
 * shared by every CPU (lock-free: concurrent CPUs may let a few more through). */
enum ic_fw_limit_kind {
	IC_FW_LIMIT_SOURCE = 0,    /* one bucket per source address */
	IC_FW_LIMIT_SUBNET = 1,    /* one per source subnet (v4_prefix, v6_prefix) */
	IC_FW_LIMIT_PORT = 2,      /* one per protocol and destination port */
	IC_FW_LIMIT_INTERFACE = 3, /* one per interface: a ceiling on all sources */
	IC_FW_LIMIT_KINDS = 4,
};

enum ic_fw_limit_sizes {
	IC_FW_LIMIT_KEYS = 131072, /* buckets (LRU: the least recently used goes first) */
};

/* One limit's rate (per_sec 0: off). */
struct ic_fw_limit_rate {
	__u32 per_sec; /* host order; new connections a second */
	__u32 burst;   /* host order; connections a full bucket admits at once */
};

/* The limits' configuration (array map ic_fw_limit_config, one entry). */
struct ic_fw_limit_config {
	struct ic_fw_limit_rate rates[IC_FW_LIMIT_KINDS]; /* by enum ic_fw_limit_kind */
	__u8 v4_prefix; /* IC_FW_LIMIT_SUBNET: the IPv4 subnet's prefix length (1-32) */
	__u8 v6_prefix; /* and the IPv6 one's (1-128) */
	__u8 _pad0[6];
};

/* A limit's bucket's key (LRU hash ic_fw_limits). */
struct ic_fw_limit_key {
	__u8 addr[16];  /* source or masked subnet; IPv4 as IPv4-mapped; else zero */
	__u32 ifindex;  /* host order; IC_FW_LIMIT_INTERFACE; else 0 */
	__u16 port;     /* host order; IC_FW_LIMIT_PORT; else 0 */
	__u8 proto;     /* IC_FW_LIMIT_PORT; else 0 */
	__u8 kind;      /* enum ic_fw_limit_kind */
};

/* A limit's bucket (tokens in nano-connections). */
struct ic_fw_limit_bucket {
	__s64 tokens;
	__u64 last_ns;
	__u64 dropped;  /* refused since the bucket last reported */
	__u64 event_ns; /* when it last reported (at most once a second) */
};

/* Flags of a limit event (struct ic_fw_limit_event.flags). */
enum ic_fw_limit_flags {
	IC_FW_LIMIT_F_DRY_RUN = 1, /* dry-run: the connections were only counted */
};

/* A limit refused connections: at once for the first refusal, then at most once a
 * second per bucket while it keeps refusing, with the count since its last event. */
struct ic_fw_limit_event {
	struct ic_event_header hdr;
	__u8 key[16];   /* the bucket's address: the source, or the subnet's base; zero for
			 * port and interface limits; IPv4 as IPv4-mapped */
	__u8 src[16];   /* the refused connection's source (the latest one) */
	__u8 dst[16];   /* and its destination */
	__u64 dropped;  /* host order; refused since this bucket's previous event */
	__u32 ifindex;  /* host order; where the latest one arrived */
	__u32 per_sec;  /* host order; the limit */
	__u32 burst;    /* host order */
	__u16 sport;    /* host order; the latest one's ports (0 for ICMP) */
	__u16 dport;    /* host order; the echo identifier for ICMP */
	__u8 proto;
	__u8 kind;      /* enum ic_fw_limit_kind */
	__u8 prefix;    /* IC_FW_LIMIT_SUBNET: the subnet's prefix length; else 0 */
	__u8 flags;     /* enum ic_fw_limit_flags */
	__u8 _pad0[4];
};

/* NAT (nat.dnat, nat.snat), done by the firewall's tcx programs on the interfaces the
 * rules name, tied to its connection table. At ingress, translation comes before the
 * firewall (a port forward's rules see the server's address; a reply to a translated
 * source gets its original destination back); at egress, after it (rules see the
 * original source; a reply from a forwarded server gets the address the client used).
 * The connection table therefore always holds the inner tuple: client and server as
 * they are, not as the wire outside shows them. Each translated connection has two
 * entries in ic_nat_map, one per direction, keyed by the tuple as the packet arrives at
 * the hook that rewrites it. */
enum ic_nat_sizes {
	IC_NAT_MAX_RULES = 256,     /* port forwards, and source translations */
	IC_NAT_ENTRIES = 262144,    /* directions of translated connections (two each) */
	IC_NAT_PORT_TRIES = 16,     /* source ports tried when the connection's is taken */
	IC_NAT_PORT_FIRST = 32768,  /* the range a taken source port is replaced from */
	IC_NAT_PORT_COUNT = 28232,  /* 32768-60999, the kernel's default ephemeral range */
};

/* What a translation rewrites (struct ic_nat_value.rewrite). */
enum ic_nat_rewrite {
	IC_NAT_REWRITE_SRC = 1,
	IC_NAT_REWRITE_DST = 2,
};

/* Which rule made a translation (struct ic_nat_value.kind). */
enum ic_nat_kind {
	IC_NAT_DNAT = 1,
	IC_NAT_SNAT = 2,
};

/* A port forward's key (hash ic_nat_dnat): connections arriving on ifindex for proto
 * and dport (0: the forward of every port, looked up when no port's matches), of one
 * family (4 or 6: the target's). */
struct ic_nat_dnat_key {
	__u32 ifindex; /* host order */
	__u16 dport;   /* host order */
	__u8 proto;
	__u8 family;
};

/* A port forward (or a source translation: the address to write). */
struct ic_nat_target {
	__u8 addr[16]; /* network order; IPv4 as IPv4-mapped */
	__u16 port;    /* host order; 0: keep the connection's */
	__u16 rule;    /* host order; the rule's counter, index into ic_nat_counters */
	__u32 _pad0;
};

/* A source translation's key (LPM trie ic_nat_snat): connections leaving through
 * ifindex from a source in the prefix (prefixlen counts the 32 bits of ifindex, then
 * the address's; IPv4 as IPv4-mapped, so 32 + 96 + its length). */
struct ic_nat_snat_key {
	__u32 prefixlen; /* host order */
	__u32 ifindex;   /* network order, so the trie compares it first, whole */
	__u8 addr[16];
};

/* A packet as it arrives at the hook that rewrites it (hash ic_nat_map). */
struct ic_nat_key {
	__u8 src[16];  /* network order; IPv4 as IPv4-mapped */
	__u8 dst[16];
	__u32 ifindex; /* host order */
	__u16 sport;   /* host order */
	__u16 dport;   /* host order */
	__u8 proto;
	__u8 egress;   /* 1: the egress hook, 0: ingress */
	__u8 _pad0[2];
};

/* The rewrite for one direction of a translated connection. */
struct ic_nat_value {
	__u8 addr[16];     /* network order; the new address */
	__u16 port;        /* host order; the new port */
	__u8 rewrite;      /* enum ic_nat_rewrite */
	__u8 kind;         /* enum ic_nat_kind */
	__u16 rule;        /* host order; the rule's counter */
	__u8 reply;        /* 1: the reply direction's entry */
	__u8 _pad0;
	__u64 created_ns;  /* host order; CLOCK_MONOTONIC */
	struct ic_ct_key ct; /* the connection it belongs to (the inner tuple, canonical) */
};

/* The NAT configuration (array map ic_nat_config, one entry). */
struct ic_nat_config {
	__u32 active; /* host order; 0: no rule, nothing looked up */
	__u32 _pad0;
};


/* ---- IDS selection (in the firewall's tcx programs) ----
 * When a connection opens, the firewall decides whether the IDS inspects it: its
 * server port (the opener's destination port) or its client port is in ic_ids_ports
 * for its protocol, or IC_IDS_F_ALL_PORTS is set, or one flow in `sample_every` of the
 * others. An inspected connection carries IC_CT_F_INSPECT and an ic_ids_flow; its
 * first `depth` payload bytes in each direction go to user space as snippets (ring
 * buffer ic_ids_ring), where the rule matcher runs. A `drop` rule's match sets the
 * flow's `blocked`: its later packets are dropped, both ways. */
enum ic_ids_limits {
	IC_IDS_SNAP = 1024,           /* payload bytes one snippet carries at most */
	IC_IDS_RING_BYTES = 4194304,  /* the snippet ring buffer */
	IC_IDS_FLOWS = 65536,         /* inspected connections at once (more: not inspected) */
	IC_IDS_PORTS = 65536,         /* entries of ic_ids_ports: one per port */
	IC_IDS_PREFIX_MAX = 16,       /* longest content the kernel matches itself */
	IC_IDS_PREFIXES = 4096,       /* such contents at most */
};

/* struct ic_ids_config.flags */
enum ic_ids_flags {
	IC_IDS_F_ON = 1,        /* select flows at all */
	IC_IDS_F_ALL_PORTS = 2, /* every TCP and UDP connection is inspected */
	IC_IDS_F_DRY_RUN = 4,   /* a blocked flow's packets are counted, not dropped */
};

/* ic_ids_ports values: which protocols a port selects. */
enum ic_ids_port_bits {
	IC_IDS_PORT_TCP = 1,
	IC_IDS_PORT_UDP = 2,
};

/* The IDS selection's configuration (array ic_ids_config, one entry). */
struct ic_ids_config {
	__u32 flags;        /* host order; enum ic_ids_flags */
	__u32 depth;        /* host order; payload bytes per direction handed over */
	__u32 sample_every; /* host order; also one connection in N of the others; 0: none */
	__u32 prefix_lens;  /* host order; bit L-1: ic_ids_prefixes holds contents of L bytes
			     * for a given port; bit 16+L-1: for any port */
};

/* A `drop` rule the kernel matches itself (hash ic_ids_prefixes, value: the sid): one
 * content of at most IC_IDS_PREFIX_MAX bytes at the very start of a direction's payload
 * (`content:"GET /x"; depth:6;`), no other condition but the server port and the
 * direction. The first payload packet of that direction is dropped when it starts with
 * it, and the connection blocked, before any byte reaches the other side. */
struct ic_ids_prefix_key {
	__u16 port;      /* host order; the connection's server port; 0: any */
	__u8 len;        /* bytes of `bytes` that count (the rest zero) */
	__u8 to_server;  /* 1: sent by the side that opened the connection; 0: the other */
	__u8 bytes[IC_IDS_PREFIX_MAX];
};

/* An inspected connection (hash ic_ids_flows, keyed by struct ic_ct_key; removed with
 * its connection by user space's sweep). */
struct ic_ids_flow {
	__u32 seen_orig;  /* host order; payload bytes counted from the side that opened it */
	__u32 seen_reply; /* host order; from the other side */
	__u32 blocked;    /* host order; non-zero: drop its packets (set by user space) */
	__u32 _pad0;
};

/* struct ic_ids_snippet.flags */
enum ic_ids_snippet_flags {
	IC_IDS_SNIP_ORIG = 1,    /* sent by the side that opened the connection */
	IC_IDS_SNIP_INBOUND = 2, /* the connection was opened from outside */
	IC_IDS_SNIP_INGRESS = 4, /* seen arriving (else leaving) */
	IC_IDS_SNIP_LAST = 8,    /* the packet's last snippet (a packet larger than
				  * IC_IDS_SNAP comes as several, in order) */
};

/* IC_IDS_SNAP bytes of a packet's payload, within the flow's depth: a larger payload
 * comes as several snippets in order, the last flagged IC_IDS_SNIP_LAST. */
struct ic_ids_snippet {
	struct ic_event_header hdr;
	struct ic_ct_key key; /* the connection */
	__u8 src[16];         /* network order; this packet's; IPv4 as IPv4-mapped */
	__u8 dst[16];
	__u64 cgroup_id;      /* host order; the connection's local socket's cgroup, or 0 */
	__u32 pid;            /* host order; the process that opened it when local, or 0 */
	__u32 ifindex;        /* host order */
	__u32 seq;            /* host order; TCP: the sequence number of data[0]; UDP: data[0]'s
			       * offset in the datagram */
	__u32 offset;         /* host order; payload bytes of this direction counted before
			       * data[0] */
	__u32 payload_len;    /* host order; the packet's whole payload */
	__u16 sport;          /* host order */
	__u16 dport;
	__u16 len;            /* host order; bytes in data */
	__u8 proto;
	__u8 flags;           /* enum ic_ids_snippet_flags */
	__u8 data[IC_IDS_SNAP];
};

/* ---- Scrub: packet normalisation on chosen interfaces (bpf-src/scrub.bpf.c) ----
 * tcx programs on an interface's ingress and egress rewrite IPv4/IPv6 headers and TCP
 * SYNs as the interface's ic_scrub_config says, keeping every checksum right. */

/* struct ic_scrub_config.flags */
enum ic_scrub_flags {
	IC_SCRUB_F_CLEAR_DF = 1,  /* clear IPv4 Don't Fragment */
	IC_SCRUB_F_RANDOM_ID = 2, /* a random IPv4 identification (unfragmented packets) */
	IC_SCRUB_F_INGRESS = 4,   /* also arriving packets (else leaving ones only) */
};

/* One interface's scrubbing (hash ic_scrub_config, keyed by ifindex). */
struct ic_scrub_config {
	__u8 ttl_floor;  /* IPv4 TTL raised to at least this; 0: untouched */
	__u8 hop_floor;  /* IPv6 hop limit raised to at least this; 0: untouched */
	__u16 mss_max;   /* host order; TCP SYN MSS option lowered to this; 0: untouched */
	__u32 flags;     /* host order; enum ic_scrub_flags */
};

/* Scrub totals (per-CPU array, indexed by this enum). */
enum ic_scrub_total {
	IC_SCRUB_SEEN = 0,        /* packets on a scrubbed interface */
	IC_SCRUB_TTL = 1,         /* TTL or hop limit raised */
	IC_SCRUB_MSS = 2,         /* SYNs whose MSS was lowered */
	IC_SCRUB_DF = 3,          /* DF cleared */
	IC_SCRUB_ID = 4,          /* IPv4 identification randomised */
	IC_SCRUB_FAILED = 5,      /* rewrites the kernel refused (the packet passed as it was) */
	IC_SCRUB_TOTAL_COUNT = 6,
	IC_SCRUB_INTERFACES = 64, /* interfaces configured at most */
};

/* ---- Quarantine (bpf-src/quarantine.bpf.c) ----
 * tcx programs on chosen interfaces look up each packet's source in an IOC set (LPM
 * tries keyed by struct ic_lpm_v4_key / ic_lpm_v6_key); a match is tagged with a VLAN
 * or redirected to another interface instead of being dropped. */

/* struct ic_quarantine_action.kind */
enum ic_quarantine_kind {
	IC_QUARANTINE_VLAN = 1,     /* push an 802.1Q tag `vlan` and pass */
	IC_QUARANTINE_REDIRECT = 2, /* send it out of interface `ifindex` */
	IC_QUARANTINE_REDIRECT_INGRESS = 3, /* into interface `ifindex`, as if it arrived there */
};

/* What a source in the IOC set gets (the tries' value). */
struct ic_quarantine_action {
	__u32 ifindex; /* host order; the redirect's target */
	__u16 vlan;    /* host order; the VLAN id, 1..4094 */
	__u8 kind;     /* enum ic_quarantine_kind */
	__u8 _pad0;
};

/* Quarantine totals (per-CPU array). */
enum ic_quarantine_total {
	IC_QUARANTINE_SEEN = 0,      /* packets looked up */
	IC_QUARANTINE_TAGGED = 1,    /* tagged with the VLAN */
	IC_QUARANTINE_REDIRECTED = 2, /* redirected */
	IC_QUARANTINE_FAILED = 3,    /* the kernel refused the tag or redirect: passed as is */
	IC_QUARANTINE_TOTAL_COUNT = 4,
	IC_QUARANTINE_PREFIXES = 262144, /* prefixes per family */
};

#endif /* IRONCLAD_ABI_H */
