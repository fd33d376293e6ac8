// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * egress.bpf.c - the identity firewall: per-process egress policy at connect() and
 * sendmsg(), decided before a SYN or datagram leaves.
 *
 * Who is connecting is the process's executable identity (device, inode, modification time
 * of the file it executed, tracked on exec/fork/exit and seeded from /proc), its comm,
 * uid and cgroup. Rules are indexed by identity value: for one connect the program looks
 * at the rules of at most five keys (any, exe, comm, uid, cgroup). Each key's rules are
 * compiled into the stateful firewall's bit-vector classifier (lib/bitvec.h) per
 * protocol: the destination and the port each name a class, a bitmap of the key's rules,
 * and the lowest bit of their AND whose rule also matches the rest of the caller's
 * identity (uid, cgroup, comm, ancestry) is the key's first match, in a fixed number of
 * lookups however many rules share the key. The first of the keys' matches in policy
 * order decides. IPv4 and IPv4-mapped IPv6 destinations are both compared as
 * IPv4-mapped addresses, so an AF_INET6 socket cannot bypass IPv4 rules.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>
#include "ironclad.h"
#include "proctable.h"
#include "bitvec.h"
#include "tokens.h"

#define IC_EEXIST 17 /* errno.h is not for BPF targets */

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define IC_NS 1000000000LL


struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, IC_EGRESS_MAX_RULES);
	__type(key, __u32);
	__type(value, struct ic_egress_rule);
} ic_egress_rules0 SEC(".maps"), ic_egress_rules1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, IC_EGRESS_BUCKETS);
	__type(key, struct ic_egress_key);
	__type(value, struct ic_egress_bucket);
} ic_egress_index0 SEC(".maps"), ic_egress_index1 SEC(".maps");

/* The keys' classes, both generations (see struct ic_egress_bucket in ironclad.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_FW_MAX_PREFIXES);
	__type(key, struct ic_fw_addr_key);
	__type(value, __u32);
} ic_egress_addr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_FW_MAX_PIECES);
	__type(key, struct ic_fw_port_key);
	__type(value, __u32);
} ic_egress_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_FW_MAX_WORDS);
	__type(key, struct ic_fw_word_key);
	__type(value, __u64);
} ic_egress_words SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_EGRESS_CLASSES);
	__type(key, __u64);
	__type(value, struct ic_fw_summary);
} ic_egress_summaries SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 2 * IC_EGRESS_PROTOS * IC_EGRESS_MAX_RULES);
	__type(key, __u32);
	__type(value, __u32);
} ic_egress_slots SEC(".maps");

/* The destination filter (struct ic_egress_dst_owner), both generations, at most one
 * prefix per rule each: a hash keyed by prefix (IC_EGRESS_F_DST_HASH, one length), or
 * a trie (the tag's first byte is the generation, the others zero). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 2 * IC_EGRESS_MAX_RULES);
	__type(key, struct ic_egress_dst_key);
	__type(value, struct ic_egress_dst_owner);
} ic_egress_dst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 2 * IC_EGRESS_MAX_RULES);
	__type(key, struct ic_fw_addr_key);
	__type(value, struct ic_egress_dst_owner);
} ic_egress_dst_trie SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct ic_egress_dst_lengths);
} ic_egress_dst_lengths SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ic_egress_config);
} ic_egress_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IC_EGRESS_MAX_RULES);
	__type(key, __u32);
	__type(value, __u64);
} ic_egress_counters SEC(".maps");

/* Each rule id's identity (a hash of the rule's text, written by user space): a reload
 * carries a rule's counts to its new id. No program reads it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, IC_EGRESS_MAX_RULES);
	__type(key, __u32);
	__type(value, __u64);
} ic_egress_rule_keys SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IC_ETOTAL_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} ic_egress_totals SEC(".maps");

/* Per-identity token bucket for connect() attempts (tokens in nano-attempts). */
struct ic_conn_bucket {
	__s64 tokens;
	__u64 last_ns;
	__u64 limited; /* attempts refused by the limit */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, IC_EGRESS_IDENTITIES);
	__type(key, struct ic_proc_exe);
	__type(value, struct ic_conn_bucket);
} ic_egress_rate SEC(".maps");

/* What the destination filter's named path decided for a caller, by everything the
 * decision read: the policy's generation (the whole count of swaps, so an entry of an
 * earlier policy is never found), the destination, port and protocol, and the caller's
 * fields the live rules compare (the others zero, as struct ic_conn starts). Not used
 * when the live rules compare ancestors (the process table's parent links are not in
 * the key). The path it saves, for a destination the caller's key names: the port's
 * class (a trie), the class summaries and words, the bit-to-slot entries and the rule
 * (some 200 ns a connect() on the benchmark's machine, where this lookup takes ~30). */
struct ic_egress_memo_key {
	__u32 generation;
	__u16 port;   /* host order */
	__u8 proto;
	__u8 known;
	__u32 uid;
	__u32 _pad;
	__u64 cgroup;
	struct ic_proc_exe exe;
	__u64 comm[2];
	__u64 dst[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct ic_egress_memo_key);
	__type(value, __u32); /* the rule slot decided, IC_EGRESS_MAX_RULES for none */
} ic_egress_memo SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);
} ic_egress_events SEC(".maps");


/* ---- Domain policy (struct ic_dns_config and what follows it in ironclad.h) ---- */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ic_dns_config);
} ic_dns_config SEC(".maps");

/* Patterns and feed names by hash. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_DNS_NAMES);
	__type(key, __u64);
	__type(value, struct ic_dns_name);
} ic_dns_names SEC(".maps");

/* The rule entries with dst_domain, both generations, in policy order. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * IC_DNS_RULES);
	__type(key, __u32);
	__type(value, struct ic_dns_rule);
} ic_dns_rules SEC(".maps");

/* Not an LRU: an LRU full of one process's answers evicts what other processes'
 * answers opened. A full scope, user or table refuses the new address instead, and user
 * space deletes expired entries (EgressFirewall::sweep_domains). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_DNS_ADDRS);
	__type(key, struct ic_dns_addr_key);
	__type(value, struct ic_dns_addr);
} ic_dns_addrs SEC(".maps");

/* How many ic_dns_addrs entries each scope and each user holds. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_DNS_OWNERS);
	__type(key, struct ic_dns_owner);
	__type(value, __u64);
} ic_dns_owners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, IC_DNS_DENIED);
	__type(key, __u8[16]);
	__type(value, struct ic_dns_denial);
} ic_dns_denied SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ic_dns_sock);
} ic_dns_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, IC_DNS_PATTERNS);
	__type(key, __u32);
	__type(value, struct ic_dns_label);
} ic_dns_patterns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, IC_DNS_FEEDS + 1);
	__type(key, __u32);
	__type(value, struct ic_dns_label);
} ic_dns_feed_names SEC(".maps");

/* Addresses of DNS-over-HTTPS resolvers (value unused): a connect() to their port 443
 * is reported, since the names it resolves are never seen. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, IC_DNS_ENCRYPTED);
	__type(key, __u8[16]);
	__type(value, __u8);
} ic_dns_encrypted SEC(".maps");

/* The name an answer for an opened address was for, per (executable, address): user
 * space writes it from the answer events, for the status's name -> addresses table.
 * The programs never read it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IC_DNS_ADDRS);
	__type(key, struct ic_dns_addr_key);
	__type(value, struct ic_dns_label);
} ic_dns_seen_names SEC(".maps");

/* The paths of executables user space learnt (the policy's, and those of processes it
 * saw in DNS events), for readers of the pins. The programs never read it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct ic_proc_exe);
	__type(value, struct ic_dns_label);
} ic_dns_exe_paths SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IC_DTOTAL_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} ic_dns_totals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, (IC_DNS_FEEDS + 1) * IC_DNS_FEED_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} ic_dns_feed_counters SEC(".maps");

/* A message being read, its question's label offsets, the event it makes and a fresh
 * ic_dns_addrs value: too big for the stack. Entry 0 for queries (egress, process
 * context), 1 for responses (ingress, softirq), so one never overwrites the other. */
/* A question, read by ic_dns_question. */
struct ic_dns_q {
	__u64 hash;      /* the whole name's */
	__u64 patterns;  /* pattern bits it matches */
	__u32 labels;    /* how many */
	__u32 end;       /* offset just past the question (qtype, qclass) */
	__u32 feed;      /* 1-based; 0 none */
	__u32 i;         /* the label being hashed (bpf_loop) */
	__u16 qtype;
	__u16 name_len;  /* bytes of the name, with its final zero */
};

/* The reading of a response's answer records (in struct ic_dns_work: the bpf_loop callback finds the same state at every call, so the verifier's walk of it converges). */
struct ic_dns_answers {
	struct ic_dns_addr_key key; /* scope: the receiver's executable; addr per record */
	__u64 patterns;
	__u32 off;       /* where the next record (or its name) starts */
	__u32 copied;
	__u32 left;      /* records still to read */
	__u32 now;       /* CLOCK_BOOTTIME seconds */
	__u32 grace;
	__u32 max_ttl;
	__u32 min_ttl;
	__u32 feed;
	__u32 naddrs;
	__u32 in_name;   /* 1 while skipping the record's owner name */
	__u32 steps;     /* labels of the current name skipped */
	__u32 bad;       /* the message ended or broke mid-record */
	__u32 refused;   /* addresses not opened: the owner's or the table's room is full */
	__u32 _pad0;
};

struct ic_dns_work {
	__u8 msg[IC_DNS_MSG_BYTES];
	struct ic_dns_policy_event ev;
	struct ic_dns_addr fresh;
	struct ic_dns_q q;
	struct ic_dns_answers ans;
	__u16 labels[128];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct ic_dns_work);
} ic_dns_work SEC(".maps");

const volatile enum ic_egress_limits ic_abi_egress_limits = IC_EGRESS_MAX_RULES;
const volatile enum ic_egress_match ic_abi_egress_match = IC_M_EXE;
const volatile enum ic_egress_action ic_abi_egress_action = IC_EGRESS_ALLOW;
const volatile enum ic_egress_key_kind ic_abi_egress_key = IC_KEY_ANY;
const volatile enum ic_egress_hook ic_abi_egress_hook = IC_HOOK_CONNECT4;
const volatile enum ic_egress_total ic_abi_egress_total = IC_ETOTAL_COUNT;
const volatile enum ic_event_kind ic_abi_egress_kind = IC_EVENT_EGRESS;
const volatile enum ic_egress_config_flags ic_abi_egress_flags = IC_EGRESS_F_DST_FILTER;
const volatile enum ic_egress_owner ic_abi_egress_owner = IC_EGRESS_OWNERS_SEVERAL;
const volatile struct ic_egress_dst_owner ic_abi_egress_dst_owner;
const volatile struct ic_egress_event ic_abi_egress_event;
const volatile struct ic_egress_dst_key ic_abi_egress_dst_key;
const volatile struct ic_egress_dst_lengths ic_abi_egress_dst_lengths;
const volatile enum ic_egress_dst_limits ic_abi_egress_dst_limits = IC_EGRESS_DST_HASH_LENGTHS;
const volatile enum ic_dns_limits ic_abi_dns_limits = IC_DNS_PATTERNS;
const volatile enum ic_dns_flags ic_abi_dns_flags = IC_DNS_F_ACTIVE;
const volatile enum ic_dns_total ic_abi_dns_total = IC_DTOTAL_COUNT;
const volatile enum ic_dns_feed_counter ic_abi_dns_feed_counter = IC_DNS_FEED_COUNTERS;
const volatile enum ic_dns_policy_what ic_abi_dns_what = IC_DNS_EV_ANSWER;
const volatile struct ic_dns_config ic_abi_dns_config;
const volatile struct ic_dns_name ic_abi_dns_name;
const volatile struct ic_dns_rule ic_abi_dns_rule;
const volatile struct ic_dns_addr_key ic_abi_dns_addr_key;
const volatile struct ic_dns_owner ic_abi_dns_owner;
const volatile enum ic_dns_owner_kind ic_abi_dns_owner_kind = IC_DNS_OWNER_UID;
const volatile struct ic_dns_addr ic_abi_dns_addr;
const volatile struct ic_dns_denial ic_abi_dns_denial;
const volatile struct ic_dns_sock ic_abi_dns_sock;
const volatile struct ic_dns_policy_event ic_abi_dns_policy_event;
const volatile struct ic_dns_label ic_abi_dns_label;
const volatile enum ic_egress_note ic_abi_egress_note = IC_EGRESS_NOTE_ENCRYPTED_DNS;

/* ---- decision ---- */

struct ic_conn {
	struct ic_proc_exe exe;
	__u32 ppid;  /* the parent's thread-group id, as the process table has it */
	__u64 pstart; /* and its start (ticks): a later process with that pid is not it */
	__u64 cgroup;
	__u32 uid;
	__u16 port;  /* host order */
	__u8 proto;
	__u8 known;  /* the executable is known */
	union {
		__u8 dst[16];
		__u64 dst64[2]; /* the same, for 8-byte copies (ic_bv_addr_class) */
	};
	union {
		__u8 comm[16];
		__u64 comm64[2]; /* the same, for 8-byte compares (ic_owner_is) */
	};
	__u32 gen;   /* the live rule set (generation & 1) */
	__u32 generation; /* the live generation, the whole count (the memo's key) */
	__u32 pidx;  /* the classifier bucket: 0 tcp, 1 udp, 2 other */
	__u32 filled; /* IC_M_EXE, IC_M_COMM, IC_M_CGROUP: those fields are read */
};

/* One identity key's scan (bpf_loop's context, on the stack of ic_search_key). */
struct ic_scan {
	__u64 summary[IC_FW_SUMMARY_WORDS];
	__u64 hits;  /* the current word's bits not looked at yet */
	struct ic_conn *c;
	__u32 classes[2]; /* the destination's and the port's class */
	__u32 word;  /* the current word */
	__u32 id;    /* the key's id */
	__u32 best;  /* lowest matching rule slot so far */
	__u32 _pad;
};

static __always_inline void ic_total(__u32 index)
{
	__u64 *v = bpf_map_lookup_elem(&ic_egress_totals, &index);

	if (v)
		*v += 1;
}

/* The caller's real uid, as bpf_get_current_uid_gid gives it (the kernel uid, mapped
 * into the initial user namespace, where the mapping is the identity): read from the
 * task's credentials, which skips the helper's walk of the user namespace's id map (40
 * of the hook's nanoseconds here). */
static __always_inline __u32 ic_current_uid(void)
{
	struct task_struct *task = bpf_get_current_task_btf();

	return task->cred->uid.val;
}

/* Reads the caller's fields in `want` (IC_M_EXE: the executable and parent from the
 * process table; IC_M_COMM; IC_M_CGROUP) that are not read yet. Each costs a helper call
 * or a hash lookup on every connect(), so a decision reads only what the live rules
 * compare (struct ic_egress_config's needs) and an event the rest. */
static __always_inline void ic_fill(struct ic_conn *c, __u32 want)
{
	want &= ~c->filled;
	if (want & IC_M_EXE) {
		__u32 tgid = bpf_get_current_pid_tgid() >> 32;
		struct ic_proc_info *info = bpf_map_lookup_elem(&ic_procs, &tgid);

		if (info) {
			c->exe = info->exe;
			c->ppid = info->ppid;
			c->pstart = info->pstart;
			c->known = 1;
		} else {
			ic_total(IC_ETOTAL_UNKNOWN_PROCESS);
		}
	}
	if (want & IC_M_COMM)
		bpf_get_current_comm(c->comm, sizeof(c->comm));
	if (want & IC_M_CGROUP)
		c->cgroup = bpf_get_current_cgroup_id();
	c->filled |= want;
}

static __always_inline int ic_bytes_eq(const __u8 *a, const __u8 *b, int n)
{
	for (int i = 0; i < n; i++)
		if (a[i] != b[i])
			return 0;
	return 1;
}

static __always_inline int ic_prefix_match(const __u8 *addr, const __u8 *net, __u8 len)
{
	for (int i = 0; i < 16; i++) {
		__u8 bits = len > i * 8 ? (len - i * 8 >= 8 ? 8 : len - i * 8) : 0;
		__u8 mask = bits ? (__u8)(0xff << (8 - bits)) : 0;

		if ((addr[i] & mask) != (net[i] & mask))
			return 0;
	}
	return 1;
}

static __always_inline int ic_exe_eq(const struct ic_proc_exe *a, const struct ic_proc_exe *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->mtime_sec == b->mtime_sec &&
	       a->mtime_nsec == b->mtime_nsec;
}

/* Whether one of the first r->ancestor_depth ancestors of the connecting process runs
 * r->ancestor, walking the process table's parent links (as they were at fork/exec). */
static __always_inline int ic_ancestor_matches(struct ic_egress_rule *r, struct ic_conn *c)
{
	__u32 pid = c->ppid;
	__u64 start = c->pstart;

	if (!c->known)
		return 0;
	for (int d = 0; d < IC_EGRESS_MAX_ANCESTORS; d++) {
		struct ic_proc_info *a;

		if (d >= r->ancestor_depth || pid == 0)
			return 0;
		a = bpf_map_lookup_elem(&ic_procs, &pid);
		/* Gone, or the pid of a process started after the parent ended. */
		if (!a || a->start != start)
			return 0;
		if (ic_exe_eq(&a->exe, &r->ancestor))
			return 1;
		pid = a->ppid;
		start = a->pstart;
	}
	return 0;
}

/* Whether `c` meets rule `r`'s conditions in `m` (IC_M_*). */
static __always_inline int ic_rule_meets(struct ic_egress_rule *r, struct ic_conn *c, __u16 m)
{
	if ((m & IC_M_EXE) && (!c->known || r->exe.dev != c->exe.dev || r->exe.ino != c->exe.ino ||
			       r->exe.mtime_sec != c->exe.mtime_sec ||
			       r->exe.mtime_nsec != c->exe.mtime_nsec))
		return 0;
	if ((m & IC_M_UID) && r->uid != c->uid)
		return 0;
	if ((m & IC_M_CGROUP) && r->cgroup_id != c->cgroup)
		return 0;
	if ((m & IC_M_PROTO) && r->proto != c->proto)
		return 0;
	if ((m & IC_M_PORTS) && (c->port < r->port_lo || c->port > r->port_hi))
		return 0;
	if ((m & IC_M_COMM) && !ic_bytes_eq(r->comm, c->comm, 16))
		return 0;
	if ((m & IC_M_DST) && !ic_prefix_match(c->dst, r->dst, r->prefixlen))
		return 0;
	if ((m & IC_M_ANCESTOR) && !ic_ancestor_matches(r, c))
		return 0;
	return 1;
}

static __always_inline int ic_rule_matches(struct ic_egress_rule *r, struct ic_conn *c)
{
	return ic_rule_meets(r, c, r->match);
}

/* The rule at `slot` of generation `gen`. One call site per map: a map pointer chosen at
 * run time makes the verifier call the map's lookup through its ops table (an indirect
 * call, a retpoline on most hosts) instead of inlining it. */
static __always_inline struct ic_egress_rule *ic_rule_at(__u32 gen, __u32 slot)
{
	struct ic_egress_rule *rule;

	/* The empty asm statements keep the compiler from merging the two calls into one
	 * whose map is a select. */
	if (gen & 1) {
		rule = bpf_map_lookup_elem(&ic_egress_rules1, &slot);
		asm volatile("" ::: "memory");
	} else {
		rule = bpf_map_lookup_elem(&ic_egress_rules0, &slot);
		asm volatile("" ::: "memory");
	}
	return rule;
}

/* Whether the rule at `slot_key` in ic_egress_slots is the caller's: its slot when the
 * rule also matches the rest of the caller's identity, 0 when it does not, -1 when the
 * slot is not before `best` (bits ascend in policy order, so no later bit can win). A
 * global function: the verifier checks it once. */
__attribute__((noinline)) int ic_candidate(struct ic_conn *c, __u32 slot_key, __u32 best)
{
	struct ic_egress_rule *rule;
	__u32 slot;
	__u32 *found;

	if (!c)
		return -1;
	found = bpf_map_lookup_elem(&ic_egress_slots, &slot_key);
	if (!found)
		return 0;
	slot = *found;
	if (slot == 0 || slot >= best)
		return -1;
	rule = ic_rule_at(c->gen, slot);
	if (!rule || !ic_rule_matches(rule, c))
		return 0;
	return (int)slot;
}

/* bpf_loop callback, one step of a key's scan: with no bit left of the current word,
 * the next candidate word (its AND); else the word's lowest bit, checked against the
 * rest of the caller's identity. One step per call keeps loops out of the callback. */
static long ic_scan_step(__u64 i, struct ic_scan *s)
{
	struct ic_conn *c = s->c;
	int verdict;
	__u32 w, bit;

	if (!c)
		return 1;
	if (!s->hits) {
		if (!ic_bv_next_word(s->summary, &w))
			return 1;
		s->word = w;
		s->hits = ic_bv_word(&ic_egress_words, c->gen & 1, s->classes, 2, w);
		return 0;
	}
	bit = s->word * 64 + ic_lowest_bit(s->hits);
	s->hits &= s->hits - 1;
	verdict = ic_candidate(c,
			       (c->gen & 1) << 31 | (c->pidx & 3) << 29 | (s->id & 0x7fff) << 14 |
				       (bit & 0x3fff),
			       s->best);
	if (verdict < 0)
		return 1;
	if (verdict > 0) {
		s->best = (__u32)verdict;
		return 1;
	}
	return 0;
}

/* The rest of an identity key's scan, once `s` has the key's id and the destination's
 * class and summary: the port's class and summary, then each candidate word's bits.
 * The slot of the key's first rule that matches the caller, when it comes before
 * s->best; else s->best. */
static __always_inline __u32 ic_scan_key(struct ic_conn *c, struct ic_scan *s)
{
	__u8 tag[4] = { c->gen & 1, (c->pidx & 3) | IC_FW_DIM_DPORT << 2, s->id >> 8,
			s->id & 0xff };

	if (ic_bv_port_class(&ic_egress_ports, tag, c->port, &s->classes[1]))
		return s->best;
	if (ic_bv_and_summary(&ic_egress_summaries, c->gen & 1, s->classes[1], s->summary))
		return s->best;
	/* The first candidate word here, not in the callback: verifiers before 6.7 check a
	 * bpf_loop callback as if it ran once, from the state it is first called in, and
	 * drop the code that state cannot reach (with hits a known 0, every bit check). */
	if (!ic_bv_next_word(s->summary, &s->word))
		return s->best;
	s->hits = ic_bv_word(&ic_egress_words, c->gen & 1, s->classes, 2, s->word);
	/* Every candidate word, then each of its bits: at most 256 + 16384 steps. */
	bpf_loop(IC_FW_SUMMARY_WORDS * 64 * 65, ic_scan_step, s, 0);
	return s->best;
}

/* The slot of the first rule of the caller's identity key of `kind` that matches the
 * caller, when it comes before `best`; else `best`. A global function, so the verifier
 * checks the classifier once rather than at each of the five keys (older verifiers ran
 * out of their one-million-instruction budget). */
__attribute__((noinline)) __u32 ic_search_key(struct ic_conn *c, __u32 kind, __u32 best)
{
	/* Aligned, so the identity's bytes are copied a word at a time, not a byte. */
	struct ic_egress_key key __attribute__((aligned(8))) = { .kind = kind };
	struct ic_scan s = { .c = c, .best = best };
	struct ic_egress_bucket *b;
	__u8 tag[4];

	if (!c)
		return best;
	switch (kind) {
	case IC_KEY_ANY:
		break;
	case IC_KEY_EXE:
		__builtin_memcpy(key.value, &c->exe, sizeof(c->exe));
		break;
	case IC_KEY_COMM:
		__builtin_memcpy(key.value, c->comm, 16);
		break;
	case IC_KEY_UID:
		__builtin_memcpy(key.value, &c->uid, sizeof(c->uid));
		break;
	case IC_KEY_CGROUP:
		__builtin_memcpy(key.value, &c->cgroup, sizeof(c->cgroup));
		break;
	default:
		return best;
	}
	/* One call site per map, as in ic_rule_at. */
	if (c->gen & 1) {
		b = bpf_map_lookup_elem(&ic_egress_index1, &key);
		asm volatile("" ::: "memory");
	} else {
		b = bpf_map_lookup_elem(&ic_egress_index0, &key);
		asm volatile("" ::: "memory");
	}
	if (!b)
		return best;
	s.id = b->id & 0x7fff;
	tag[0] = c->gen & 1;
	tag[1] = (c->pidx & 3) | IC_FW_DIM_DST << 2;
	tag[2] = s.id >> 8;
	tag[3] = s.id & 0xff;
	/* The destination's class and its summary first: most connections match none of
	 * a key's destinations, and then the port is never looked up. */
	if (ic_bv_addr_class(&ic_egress_addr, tag, c->dst64, &s.classes[0]))
		return best;
#pragma unroll
	for (int w = 0; w < IC_FW_SUMMARY_WORDS; w++)
		s.summary[w] = ~0ULL;
	if (ic_bv_and_summary(&ic_egress_summaries, c->gen & 1, s.classes[0], s.summary))
		return best;
	return ic_scan_key(c, &s);
}

/* The first `len` bits of a 64-bit half of an address in network order, masked. */
static __always_inline __u64 ic_masked(__u64 half, __u32 len)
{
	if (len >= 64)
		return half;
	if (len == 0)
		return 0;
	return half & bpf_cpu_to_be64(~0ULL << (64 - len));
}

/* The destination filter's entry for the caller's destination (its longest prefix
 * among every live rule's): in ic_egress_dst (one lookup per prefix length) with
 * IC_EGRESS_F_DST_HASH, else in the trie ic_egress_dst_trie. NULL when no live rule
 * names the destination. */
static __always_inline struct ic_egress_dst_owner *ic_dst_owner(struct ic_conn *c, __u32 flags)
{
	struct ic_egress_dst_lengths *lengths;
	__u32 gen = c->gen & 1;

	if (!(flags & IC_EGRESS_F_DST_HASH)) {
		struct ic_fw_addr_key key __attribute__((aligned(8))) = { .prefixlen = 32 + 128 };

		key.tag[0] = gen;
		__builtin_memcpy(key.addr, c->dst64, 16);
		return bpf_map_lookup_elem(&ic_egress_dst_trie, &key);
	}
	lengths = bpf_map_lookup_elem(&ic_egress_dst_lengths, &gen);
	if (!lengths)
		return NULL;
#pragma unroll
	for (int i = 0; i < IC_EGRESS_DST_HASH_LENGTHS; i++) {
		struct ic_egress_dst_key key __attribute__((aligned(8))) = { .generation = gen };
		struct ic_egress_dst_owner *o;
		__u32 len;
		__u64 half;

		if (i >= lengths->count)
			break;
		len = lengths->prefixlen[i];
		key.prefixlen = len;
		half = ic_masked(c->dst64[0], len);
		__builtin_memcpy(&key.addr[0], &half, 8);
		half = ic_masked(c->dst64[1], len > 64 ? len - 64 : 0);
		__builtin_memcpy(&key.addr[8], &half, 8);
		o = bpf_map_lookup_elem(&ic_egress_dst, &key);
		if (o)
			return o;
	}
	return NULL;
}

/* Whether the caller has the identity of the filter entry's one owner key (the fields
 * its kind compares are read: the configuration's kinds say which). */
static __always_inline int ic_owner_is(struct ic_conn *c, struct ic_egress_dst_owner *o)
{
	/* The value is at offset 16 of a map value, so 8-byte aligned. */
	const __u64 *v = (const __u64 *)o->value;
	__u64 exe[3];
	__u32 uid;

	switch (o->kind) {
	case IC_KEY_ANY:
		return 1;
	case IC_KEY_EXE:
		if (!c->known)
			return 0;
		__builtin_memcpy(exe, &c->exe, sizeof(exe));
		return exe[0] == v[0] && exe[1] == v[1] && exe[2] == v[2];
	case IC_KEY_COMM:
		return c->comm64[0] == v[0] && c->comm64[1] == v[1];
	case IC_KEY_UID:
		__builtin_memcpy(&uid, o->value, sizeof(uid));
		return uid == c->uid;
	case IC_KEY_CGROUP:
		return v[0] == c->cgroup;
	}
	return 0;
}

/* ic_search_dst's answer when the rules of several keys name the destination. */
#define IC_SEARCH_KEYS 0xffffffffU
/* In ic_search_dst's flags: the verdict memo may answer (no live rule compares
 * ancestors). Above the configuration's 8 bits of IC_EGRESS_F_*. */
#define IC_SEARCH_F_MEMO (1U << 31)

static __always_inline void ic_memo_key(struct ic_conn *c, struct ic_egress_memo_key *k)
{
	k->generation = c->generation;
	k->port = c->port;
	k->proto = c->proto;
	k->known = c->known;
	k->uid = c->uid;
	k->_pad = 0;
	k->cgroup = c->cgroup;
	__builtin_memcpy(&k->exe, &c->exe, sizeof(k->exe));
	k->comm[0] = c->comm64[0];
	k->comm[1] = c->comm64[1];
	k->dst[0] = c->dst64[0];
	k->dst[1] = c->dst64[1];
}

/* The destination filter's decision: `best` when no live rule names the caller's
 * destination, or the one key whose rules name it is not the caller's (no rule can
 * match); when it is, that key's first rule that matches the caller (its index entry,
 * destination trie and summary are the filter entry's); IC_SEARCH_KEYS when the rules
 * of several keys name it (each key is searched). A global function, as
 * ic_search_key. */
__attribute__((noinline)) __u32 ic_search_dst(struct ic_conn *c, __u32 flags, __u32 best)
{
	/* The memo's key and the scan's state share their bytes: the key is built for the
	 * lookup, the scan's state after it, the key again for the update. Apart they made
	 * this frame 208 bytes, and the chain connect4 -> ic_decide -> here -> the scan's
	 * callback -> ic_candidate 544 by the verifier's count (each frame rounded up to
	 * 32), over the 512 that Debian's 6.1.0-57 checks ("combined stack size of 5 calls
	 * is 544", the callback's frame counted on top of its caller's). */
	union {
		struct ic_egress_memo_key k;
		struct ic_scan s;
	} u __attribute__((aligned(8))) = {};
	struct ic_egress_dst_owner *o;
	__u32 pidx, *memo, found, class;

	if (!c)
		return best;
	o = ic_dst_owner(c, flags);
	if (!o)
		return best;
	if (o->kind == IC_EGRESS_OWNERS_SEVERAL)
		return IC_SEARCH_KEYS;
	if (!ic_owner_is(c, o))
		return best;
	pidx = c->pidx;
	if (pidx > 2)
		return best;
	class = o->classes[pidx];
	if (class == IC_EGRESS_NO_CLASS)
		return best;
	if (flags & IC_SEARCH_F_MEMO) {
		ic_memo_key(c, &u.k);
		memo = bpf_map_lookup_elem(&ic_egress_memo, &u.k);
		if (memo)
			return *memo < best ? *memo : best;
	}
	__builtin_memcpy(u.s.summary, o->summaries[pidx].words, sizeof(u.s.summary));
	u.s.hits = 0;
	u.s.c = c;
	u.s.classes[0] = class;
	u.s.classes[1] = 0;
	u.s.word = 0;
	u.s.id = o->id & 0x7fff;
	u.s.best = best;
	u.s._pad = 0;
	found = ic_scan_key(c, &u.s);
	if (flags & IC_SEARCH_F_MEMO) {
		ic_memo_key(c, &u.k);
		bpf_map_update_elem(&ic_egress_memo, &u.k, &found, BPF_ANY);
	}
	return found;
}

static __always_inline int ic_rate_ok(struct ic_egress_config *cfg, struct ic_conn *c)
{
	struct ic_conn_bucket *b;
	/* A key on this stack: older kernels take no map key from a global function's
	 * memory argument. */
	struct ic_proc_exe exe = c->exe;
	__s64 cap;
	__u64 now;

	if (!cfg->rate_per_sec)
		return 1;
	now = bpf_ktime_get_ns();
	cap = (__s64)cfg->rate_burst * IC_NS;
	b = bpf_map_lookup_elem(&ic_egress_rate, &exe);
	if (!b) {
		struct ic_conn_bucket fresh = { .tokens = cap - IC_NS, .last_ns = now };

		if (cap < IC_NS)
			return 0;
		bpf_map_update_elem(&ic_egress_rate, &exe, &fresh, BPF_NOEXIST);
		return 1;
	}
	if (!ic_tokens_take(&b->tokens, &b->last_ns, cfg->rate_per_sec, cap, now)) {
		__sync_fetch_and_add(&b->limited, 1);
		return 0;
	}
	return 1;
}

static __always_inline void ic_report(struct ic_conn *c, __u32 rule_id, __u8 verdict, __u8 hook,
				      __u8 feed, __u8 note)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct ic_egress_event *e;

	/* An event names the whole caller, whatever the rules compared. */
	ic_fill(c, IC_M_EXE | IC_M_COMM | IC_M_CGROUP);
	e = bpf_ringbuf_reserve(&ic_egress_events, sizeof(*e), 0);
	if (!e) {
		ic_total(IC_ETOTAL_EVENTS_LOST);
		return;
	}
	e->hdr.version = IC_ABI_VERSION;
	e->hdr.kind = IC_EVENT_EGRESS;
	e->hdr.size = sizeof(*e);
	e->hdr.ktime_ns = bpf_ktime_get_ns();
	e->cgroup_id = c->cgroup;
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->uid = c->uid;
	e->rule_id = rule_id;
	e->exe = c->exe;
	__builtin_memcpy(e->dst, c->dst, 16);
	e->dport = c->port;
	e->proto = c->proto;
	e->verdict = verdict;
	e->hook = hook;
	e->feed = feed;
	e->note = note;
	__builtin_memset(e->_pad0, 0, sizeof(e->_pad0));
	__builtin_memcpy(e->comm, c->comm, 16);
	bpf_ringbuf_submit(e, 0);
}

/* ---- Domain policy: the DNS traffic of marked sockets, and the connect() side ---- */

#define IC_DNS_MASK (IC_DNS_MSG_BYTES - 1)

/* Byte `off` of a message buffer, masked in a way the compiler cannot drop (it drops
 * a mask it believes redundant, and older verifiers then see an unbounded offset). */
static __always_inline __u8 ic_msg_byte(const __u8 *msg, __u32 off)
{
	barrier_var(off);
	return msg[off & IC_DNS_MASK];
}

static __always_inline void ic_dns_total(__u32 index)
{
	__u64 *v = bpf_map_lookup_elem(&ic_dns_totals, &index);

	if (v)
		*v += 1;
}

static __always_inline void ic_dns_feed_count(__u32 feed, __u32 counter)
{
	__u32 index = feed * IC_DNS_FEED_COUNTERS + counter;
	__u64 *v;

	if (feed == 0 || feed > IC_DNS_FEEDS)
		return;
	v = bpf_map_lookup_elem(&ic_dns_feed_counters, &index);
	if (v)
		*v += 1;
}

static __always_inline __u32 ic_boot_sec(void)
{
	return bpf_ktime_get_boot_ns() / IC_NS;
}

#define IC_ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define IC_SIPROUND                                                                  \
	do {                                                                         \
		v0 += v1; v1 = IC_ROTL(v1, 13); v1 ^= v0; v0 = IC_ROTL(v0, 32);      \
		v2 += v3; v3 = IC_ROTL(v3, 16); v3 ^= v2;                            \
		v0 += v3; v3 = IC_ROTL(v3, 21); v3 ^= v0;                            \
		v2 += v1; v1 = IC_ROTL(v1, 17); v1 ^= v2; v2 = IC_ROTL(v2, 32);      \
	} while (0)

/* SipHash-1-3 with key k of le64(prev) followed by the `len` (1..63) bytes of the
 * label at msg[off], lowercased: one link of a name's hash chain (ironclad.h). */
static __always_inline __u64 ic_dns_link(const __u64 *k, __u64 prev, const __u8 *msg, __u32 off,
					 __u32 len)
{
	__u64 v0 = k[0] ^ 0x736f6d6570736575ULL, v1 = k[1] ^ 0x646f72616e646f6dULL,
	      v2 = k[0] ^ 0x6c7967656e657261ULL, v3 = k[1] ^ 0x7465646279746573ULL;
	__u64 total = 8 + len;

	v3 ^= prev;
	IC_SIPROUND;
	v0 ^= prev;
	for (__u32 b = 0; b < 8; b++) {
		__u64 m = 0;
		int last = b * 8 + 8 > len;

		for (__u32 j = 0; j < 8; j++) {
			__u32 i = b * 8 + j;
			__u8 c;

			if (i >= len)
				break;
			c = ic_msg_byte(msg, off + i);
			if (c >= 'A' && c <= 'Z')
				c += 'a' - 'A';
			m |= (__u64)c << (8 * j);
		}
		if (last)
			m |= (total & 0xff) << 56;
		v3 ^= m;
		IC_SIPROUND;
		v0 ^= m;
		if (last)
			break;
	}
	v2 ^= 0xff;
	IC_SIPROUND;
	IC_SIPROUND;
	IC_SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}


/* bpf_loop callback: one label of the chain, from the last; the last IC_DNS_LABELS
 * suffixes are looked up (a pattern has at most that many labels). */
static long ic_dns_hash_step(__u64 n, __u32 *work)
{
	__u32 zero = 0, j, entry = *work & 1;
	struct ic_dns_config *cfg = bpf_map_lookup_elem(&ic_dns_config, &zero);
	struct ic_dns_work *w = bpf_map_lookup_elem(&ic_dns_work, &entry);
	struct ic_dns_name *hit;
	struct ic_dns_q *q;
	__u32 off, len;

	if (!cfg || !w)
		return 1;
	q = &w->q;
	if (q->i == 0)
		return 1;
	j = q->i - 1;
	q->i = j;
	off = w->labels[j & 127];
	len = ic_msg_byte(w->msg, off) & 63;
	q->hash = ic_dns_link(cfg->key, q->hash, w->msg, off + 1, len);
	if (q->labels - j > IC_DNS_LABELS)
		return 0;
	hit = bpf_map_lookup_elem(&ic_dns_names, &q->hash);
	if (!hit)
		return 0;
	if (j == 0) {
		q->patterns |= hit->exact;
		if (hit->feed_exact)
			q->feed = hit->feed_exact;
	} else {
		q->patterns |= hit->wild;
		if (hit->feed_wild && !q->feed)
			q->feed = hit->feed_wild;
	}
	return 0;
}

/* Reads the question of the message in w->msg (`copied` bytes) into w->q: one
 * question whose name is plain labels (no compression pointer), its hash, the patterns
 * and the feed it matches. 0 when the message cannot be read. */
static __always_inline int ic_dns_question(struct ic_dns_work *w, __u32 copied, __u32 work)
{
	struct ic_dns_q *q = &w->q;
	__u32 off = 12, n = 0;

	if (copied < 17 || w->msg[4] != 0 || w->msg[5] != 1)
		return 0;
	for (int i = 0; i < 128; i++) {
		__u8 len;

		if (off >= copied || off >= IC_DNS_MSG_BYTES)
			return 0;
		len = ic_msg_byte(w->msg, off);
		if (len == 0)
			break;
		if (len > 63)
			return 0;
		w->labels[i & 127] = off;
		n++;
		off += 1 + len;
		if (off - 12 > 255)
			return 0;
	}
	if (n == 0 || ic_msg_byte(w->msg, off) != 0 || off + 5 > copied)
		return 0;
	q->labels = n;
	q->name_len = off + 1 - 12;
	q->qtype = (__u16)ic_msg_byte(w->msg, off + 1) << 8 | ic_msg_byte(w->msg, off + 2);
	q->end = off + 5;
	q->hash = 0;
	q->patterns = 0;
	q->feed = 0;
	q->i = n;
	bpf_loop(128, ic_dns_hash_step, &work, 0);
	return w->q.i == 0;
}

/* Where the DNS message of a packet is (cgroup skb data starts at the network header). */
struct ic_dns_pkt {
	__u8 peer[16];   /* the other end (server); IPv4 as IPv4-mapped */
	__u32 msg_off;   /* the message (past TCP's two-byte length) */
	__u32 msg_len;   /* its length as announced (UDP: the payload) */
	__u16 peer_port;
	__u8 proto;
	__u8 _pad;
};

/* Finds the DNS message of a packet to (out) or from (in) port 53. 0: not one; -1: DNS
 * over TCP whose segment does not start and hold a whole message. */
static __always_inline int ic_dns_packet(struct __sk_buff *skb, int out, struct ic_dns_pkt *p)
{
	__u32 l4_off, end, payload;
	__u8 ports[4];
	__u16 sport, dport;

	if (skb->protocol == bpf_htons(0x0800)) {
		struct iphdr ip;
		__u32 a;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return 0;
		if (ip.frag_off & bpf_htons(0x3fff))
			return 0;
		l4_off = ip.ihl * 4;
		end = bpf_ntohs(ip.tot_len);
		p->proto = ip.protocol;
		a = out ? ip.daddr : ip.saddr;
		__builtin_memset(p->peer, 0, 10);
		p->peer[10] = p->peer[11] = 0xff;
		__builtin_memcpy(&p->peer[12], &a, 4);
	} else if (skb->protocol == bpf_htons(0x86DD)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return 0;
		l4_off = sizeof(ip6);
		end = sizeof(ip6) + bpf_ntohs(ip6.payload_len);
		p->proto = ip6.nexthdr;
		if (out)
			__builtin_memcpy(p->peer, &ip6.daddr, 16);
		else
			__builtin_memcpy(p->peer, &ip6.saddr, 16);
	} else {
		return 0;
	}
	if (bpf_skb_load_bytes(skb, l4_off, ports, sizeof(ports)))
		return 0;
	sport = (ports[0] << 8) | ports[1];
	dport = (ports[2] << 8) | ports[3];
	if ((out ? dport : sport) != 53)
		return 0;
	p->peer_port = 53;
	if (p->proto == IPPROTO_UDP) {
		payload = l4_off + 8;
		if (end <= payload)
			return 0;
		p->msg_off = payload;
		p->msg_len = end - payload;
		return 1;
	}
	if (p->proto == IPPROTO_TCP) {
		__u8 doff, len[2];

		if (bpf_skb_load_bytes(skb, l4_off + 12, &doff, 1))
			return 0;
		payload = l4_off + (doff >> 4) * 4;
		if (end <= payload)
			return 0; /* no data: a handshake or an ACK */
		if (end - payload < 2 || bpf_skb_load_bytes(skb, payload, len, 2))
			return -1;
		p->msg_off = payload + 2;
		p->msg_len = (len[0] << 8) | len[1];
		if (end - payload - 2 < p->msg_len)
			return -1;
		return 1;
	}
	return 0;
}

/* Copies the message into w->msg; the bytes copied (at most IC_DNS_MSG_BYTES). */
static __always_inline __u32 ic_dns_copy(struct __sk_buff *skb, struct ic_dns_pkt *p,
					 struct ic_dns_work *w)
{
	/* 64 bits: a 32-bit length is zero-extended into a copy whose bounds the verifier
	 * does not carry back to the register passed. */
	__u64 len = p->msg_len;

	if (len > IC_DNS_MSG_BYTES)
		len = IC_DNS_MSG_BYTES;
	barrier_var(len);
	if (len < 12 || len > IC_DNS_MSG_BYTES)
		return 0;
	if (bpf_skb_load_bytes(skb, p->msg_off, w->msg, len))
		return 0;
	return len;
}

/* The socket's mark, when it has one (it sent to port 53 while domain policy was on). */
static __always_inline struct ic_dns_sock *ic_dns_sock_of(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;

	if (!sk)
		return NULL;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return NULL;
	return bpf_sk_storage_get(&ic_dns_socks, sk, 0, 0);
}

static __always_inline void ic_dns_event_head(struct ic_dns_work *w, struct ic_dns_sock *s,
					      struct ic_dns_pkt *p, __u8 what)
{
	struct ic_dns_q *q = &w->q;
	struct ic_dns_policy_event *e = &w->ev;
	__u32 n = q->name_len;

	e->hdr.version = IC_ABI_VERSION;
	e->hdr.kind = IC_EVENT_DNS_POLICY;
	e->hdr.size = sizeof(*e);
	e->hdr.ktime_ns = bpf_ktime_get_ns();
	e->pid = s->tgid;
	e->uid = s->uid;
	e->exe = s->exe;
	__builtin_memcpy(e->comm, s->comm, 16);
	__builtin_memcpy(e->server, p->peer, 16);
	e->patterns = q->patterns;
	e->ttl = 0;
	e->port = p->peer_port;
	e->qtype = q->qtype;
	e->what = what;
	e->feed = q->feed;
	e->blocked = 0;
	e->proto = p->proto;
	e->naddrs = 0;
	e->name_len = n;
	/* The name as sent: bytes 12.. of the message (at most 256, in bounds). */
	__builtin_memcpy(e->name, &w->msg[12], IC_DNS_NAME_BYTES);
}

/* Writes the event. The reader is woken only when the ring is half full: a wake-up per
 * answer costs the answer's path microseconds (an interrupt to this CPU: measured
 * 9-10 us per answer here), and the reader also reads every 100 ms. */
static __always_inline void ic_dns_emit(struct ic_dns_work *w)
{
	__u64 flags = bpf_ringbuf_query(&ic_egress_events, BPF_RB_AVAIL_DATA) > 512 * 1024 ?
			      BPF_RB_FORCE_WAKEUP :
			      BPF_RB_NO_WAKEUP;

	if (bpf_ringbuf_output(&ic_egress_events, &w->ev, sizeof(w->ev), flags))
		ic_dns_total(IC_DTOTAL_EVENTS_LOST);
}

/* Whether the rule at `slot` can match `c`, the owner of a DNS socket: its conditions
 * on the process (executable, ancestors, user, cgroup, command), not those on the
 * connection that comes later (protocol, ports, destination). A global function:
 * verified once. */
__attribute__((noinline)) int ic_dns_owner_matches(struct ic_conn *c, __u32 slot)
{
	struct ic_egress_rule *rule;

	if (!c)
		return 0;
	rule = ic_rule_at(c->gen, slot);
	return rule && ic_rule_meets(rule, c, rule->match & ~(IC_M_PROTO | IC_M_PORTS | IC_M_DST));
}

/* The scan of the domain rules for a socket's owner (bpf_loop context). */
struct ic_dns_reach {
	struct ic_conn *c;
	__u64 want;   /* the name's pattern bits */
	__u64 found;  /* of them, those of rules that can match the owner */
	__u32 gen;
	__u32 _pad;
};

/* bpf_loop callback: domain rule `i` of the live generation. */
static long ic_dns_reach_step(__u64 i, struct ic_dns_reach *s)
{
	__u32 index = (s->gen & 1) * IC_DNS_RULES + (__u32)(i & (IC_DNS_RULES - 1));
	struct ic_dns_rule *r = bpf_map_lookup_elem(&ic_dns_rules, &index);

	if (!r || r->slot == 0)
		return 1;
	if ((r->patterns & s->want & ~s->found) && ic_dns_owner_matches(s->c, r->slot))
		s->found |= r->patterns & s->want;
	return 0;
}

/* Of `patterns` (a name's), the bits of the domain rules that can match the owner of
 * socket `s`: only those may open addresses for its answers, so the answers of a
 * process no rule by name can match (copies of a binary, another user's programs) fill
 * no entry. A global function: verified once. */
__attribute__((noinline)) __u64 ic_dns_reach(struct ic_dns_sock *s, __u64 patterns)
{
	__u32 zero = 0;
	struct ic_egress_config *cfg = bpf_map_lookup_elem(&ic_egress_config, &zero);
	struct ic_conn c = {};
	struct ic_dns_reach scan = { .c = &c, .want = patterns };

	if (!s || !cfg)
		return 0;
	c.exe = s->exe;
	c.ppid = s->ppid;
	c.pstart = s->pstart;
	c.cgroup = s->cgroup;
	c.uid = s->uid;
	c.known = s->known ? 1 : 0;
	__builtin_memcpy(c.comm, s->comm, 16);
	c.gen = cfg->generation & 1;
	c.filled = IC_M_EXE | IC_M_COMM | IC_M_CGROUP;
	scan.gen = c.gen;
	bpf_loop(IC_DNS_RULES, ic_dns_reach_step, &scan, 0);
	return scan.found;
}

/* A query leaving a marked socket: remembered as in flight when its name matters (so
 * only its answer is read), with the patterns its answer may open for the socket's
 * owner; reported when a feed lists it, dropped when that feed blocks queries. */
static __always_inline int ic_dns_query(struct __sk_buff *skb)
{
	__u32 zero = 0, work = 0, copied, feed;
	struct ic_dns_config *cfg = bpf_map_lookup_elem(&ic_dns_config, &zero);
	struct ic_dns_pkt p = {};
	struct ic_dns_work *w;
	struct ic_dns_sock *s;
	int found;

	if (!cfg || !(cfg->flags & IC_DNS_F_ACTIVE))
		return 1;
	s = ic_dns_sock_of(skb);
	if (!s)
		return 1;
	found = ic_dns_packet(skb, 1, &p);
	if (found <= 0)
		return 1;
	w = bpf_map_lookup_elem(&ic_dns_work, &work);
	if (!w)
		return 1;
	copied = ic_dns_copy(skb, &p, w);
	if (!copied || (w->msg[2] & 0x80) || !ic_dns_question(w, copied, work))
		return 1;
	ic_dns_total(IC_DTOTAL_QUERIES);
	feed = w->q.feed;
	if (w->q.patterns || feed) {
		struct ic_dns_pending *slot;
		__u32 i = s->next % IC_DNS_PENDING;
		__u64 reach = w->q.patterns ? ic_dns_reach(s, w->q.patterns) : 0;

		if (w->q.patterns && !reach)
			ic_dns_total(IC_DTOTAL_OUT_OF_SCOPE);
		s->next = i + 1;
		slot = &s->pending[i & (IC_DNS_PENDING - 1)];
		slot->qhash = w->q.hash;
		slot->patterns = reach;
		__builtin_memcpy(slot->server, p.peer, 16);
		slot->txid = (__u16)w->msg[0] << 8 | w->msg[1];
		slot->port = p.peer_port;
		slot->qtype = w->q.qtype;
	}
	if (!feed)
		return 1;
	ic_dns_feed_count(feed, IC_DFEED_QUERIES);
	ic_dns_event_head(w, s, &p, IC_DNS_EV_FEED_QUERY);
	if (feed <= 32 && (cfg->block_feeds & (1U << ((feed - 1) & 31)))) {
		ic_dns_feed_count(feed, IC_DFEED_BLOCKED);
		ic_dns_total(IC_DTOTAL_QUERY_BLOCKED);
		w->ev.blocked = 1;
		ic_dns_emit(w);
		return 0;
	}
	ic_dns_emit(w);
	return 1;
}

/* One more ic_dns_addrs entry for `owner` (`count`: its counter, if it has one). */
static __always_inline void ic_dns_owner_add(struct ic_dns_owner *owner, __u64 *count)
{
	__u64 one = 1;

	if (!count) {
		if (bpf_map_update_elem(&ic_dns_owners, owner, &one, BPF_NOEXIST) == 0)
			return;
		count = bpf_map_lookup_elem(&ic_dns_owners, owner);
		if (!count)
			return;
	}
	__sync_fetch_and_add(count, 1);
}

/* Opens a->key.addr for a->patterns until `expires` (or, for a feed's name, denies
 * it). */
static __always_inline void ic_dns_open(struct ic_dns_work *w, struct ic_dns_answers *a,
					__u32 expires)
{
	struct ic_dns_addr *v;
	__u64 patterns = a->patterns;

	if (a->feed) {
		struct ic_dns_denial d = { .expires = expires, .feed = a->feed };

		bpf_map_update_elem(&ic_dns_denied, a->key.addr, &d, BPF_ANY);
		ic_dns_feed_count(a->feed, IC_DFEED_ADDRESSES);
		ic_dns_total(IC_DTOTAL_DENIED);
		return;
	}
	v = bpf_map_lookup_elem(&ic_dns_addrs, &a->key);
	if (!v) {
		struct ic_dns_owner scope = { .exe = a->key.exe, .uid = a->key.uid,
					      .kind = IC_DNS_OWNER_SCOPE };
		struct ic_dns_owner user = { .uid = a->key.uid, .kind = IC_DNS_OWNER_UID };
		__u64 *held = bpf_map_lookup_elem(&ic_dns_owners, &scope);
		__u64 *by_user = bpf_map_lookup_elem(&ic_dns_owners, &user);
		long err;

		/* A process that floods answers fills its own room, never another's. */
		if ((held && *held >= IC_DNS_PER_SCOPE) || (by_user && *by_user >= IC_DNS_PER_UID)) {
			ic_dns_total(IC_DTOTAL_OWNER_FULL);
			a->refused++;
			return;
		}
		__builtin_memset(&w->fresh, 0, sizeof(w->fresh));
		err = bpf_map_update_elem(&ic_dns_addrs, &a->key, &w->fresh, BPF_NOEXIST);
		if (err == 0) {
			ic_dns_owner_add(&scope, held);
			ic_dns_owner_add(&user, by_user);
		} else if (err != -IC_EEXIST) { /* -EEXIST: another CPU created it first */
			ic_dns_total(IC_DTOTAL_TABLE_FULL);
			a->refused++;
			return;
		}
		v = bpf_map_lookup_elem(&ic_dns_addrs, &a->key);
		if (!v)
			return;
	}
	v->patterns |= patterns;
#pragma clang loop unroll(disable)
	for (int b = 0; b < IC_DNS_PATTERNS; b++) {
		if (((patterns >> b) & 1) && v->expires[b] < expires)
			v->expires[b] = expires;
	}
	ic_dns_total(IC_DTOTAL_OPENED);
}

/* bpf_loop callback: one label of a record's owner name, or one record's fixed part
 * and data. The state is in ic_dns_work entry 1 (w->ans). */
static long ic_dns_answer_step(__u64 n, void *ctx)
{
	__u32 one = 1, off, ttl, expires, k;
	struct ic_dns_work *w = bpf_map_lookup_elem(&ic_dns_work, &one);
	struct ic_dns_answers *a;
	__u16 type, class, rdlen;
	__u8 len;

	if (!w)
		return 1;
	a = &w->ans;
	off = a->off;
	if (a->left == 0)
		return 1;
	if (off >= a->copied || off >= IC_DNS_MSG_BYTES) {
		a->bad = 1;
		return 1;
	}
	if (a->in_name) {
		len = ic_msg_byte(w->msg, off);
		if (len == 0) {
			a->off = off + 1;
			a->in_name = 0;
		} else if ((len & 0xc0) == 0xc0) {
			/* A pointer ends the name; it is never followed, only checked: it must
			 * point back into what came before (a pointer to itself or forward is
			 * how a compression loop starts). */
			__u32 target = (__u32)(len & 0x3f) << 8 | ic_msg_byte(w->msg, off + 1);

			if (off + 2 > a->copied || target >= off) {
				a->bad = 1;
				return 1;
			}
			a->off = off + 2;
			a->in_name = 0;
		} else if (len & 0xc0) {
			a->bad = 1;
			return 1;
		} else {
			a->off = off + 1 + len;
			a->steps++;
			if (a->steps > 127) {
				a->bad = 1;
				return 1;
			}
		}
		return 0;
	}
	if (off + 10 > a->copied) {
		a->bad = 1;
		return 1;
	}
	type = (__u16)ic_msg_byte(w->msg, off) << 8 | ic_msg_byte(w->msg, off + 1);
	class = (__u16)ic_msg_byte(w->msg, off + 2) << 8 | ic_msg_byte(w->msg, off + 3);
	ttl = (__u32)ic_msg_byte(w->msg, off + 4) << 24 |
	      (__u32)ic_msg_byte(w->msg, off + 5) << 16 |
	      (__u32)ic_msg_byte(w->msg, off + 6) << 8 | ic_msg_byte(w->msg, off + 7);
	rdlen = (__u16)ic_msg_byte(w->msg, off + 8) << 8 | ic_msg_byte(w->msg, off + 9);
	off += 10;
	if (off + rdlen > a->copied) {
		a->bad = 1;
		return 1;
	}
	if (class == 1 && ((type == 1 && rdlen == 4) || (type == 28 && rdlen == 16))) {
		if (type == 1) {
			__builtin_memset(a->key.addr, 0, 10);
			a->key.addr[10] = a->key.addr[11] = 0xff;
			for (int i = 0; i < 4; i++)
				a->key.addr[12 + i] = ic_msg_byte(w->msg, off + i);
		} else {
			for (int i = 0; i < 16; i++)
				a->key.addr[i] = ic_msg_byte(w->msg, off + i);
		}
		if (ttl > a->max_ttl)
			ttl = a->max_ttl;
		if (ttl < a->min_ttl)
			a->min_ttl = ttl;
		/* Open at least TTL + grace seconds, less than one more. */
		expires = a->now + ttl + a->grace + 1;
		ic_dns_open(w, a, expires);
		k = a->naddrs;
		if (k < IC_DNS_EVENT_ADDRS)
			__builtin_memcpy(w->ev.addrs[k & (IC_DNS_EVENT_ADDRS - 1)], a->key.addr, 16);
		a->naddrs = k + 1;
	}
	a->off = off + rdlen;
	a->left--;
	a->in_name = 1;
	a->steps = 0;
	return a->left == 0;
}

/* A response arriving at a marked socket, before it is queued there: when it answers
 * a query in flight on the socket (same id, server, port, type and name), the addresses
 * of its A and AAAA records are opened for the patterns its name matches, for the
 * socket owner's executable, or denied when a feed lists the name. Anything else is
 * counted and changes nothing. The packet always passes: the application decides what
 * to make of it. */
static __always_inline int ic_dns_response(struct __sk_buff *skb)
{
	__u32 zero = 0, work = 1, copied, ancount;
	struct ic_dns_config *cfg = bpf_map_lookup_elem(&ic_dns_config, &zero);
	struct ic_dns_pkt p = {};
	struct ic_dns_answers *a;
	struct ic_dns_work *w;
	struct ic_dns_sock *s;
	__u16 txid;
	int found, matched = 0;
	__u64 patterns = 0;

	if (!cfg || !(cfg->flags & IC_DNS_F_ACTIVE))
		return 1;
	/* The socket's mark first: every other packet of the cgroup costs only this. */
	s = ic_dns_sock_of(skb);
	if (!s) {
		/* A connected socket of port 53 that was never marked: its query left
		 * before domain policy was live. (__sk_buff's remote_port holds the
		 * port in network order in its upper 16 bits on little-endian hosts.) */
		if (skb->remote_port == (__u32)bpf_htons(53) << 16 ||
		    skb->remote_port == bpf_htons(53))
			ic_dns_total(IC_DTOTAL_UNTRACKED);
		return 1;
	}
	found = ic_dns_packet(skb, 0, &p);
	if (found == 0)
		return 1;
	if (found < 0) {
		ic_dns_total(IC_DTOTAL_SPLIT);
		return 1;
	}
	w = bpf_map_lookup_elem(&ic_dns_work, &work);
	if (!w)
		return 1;
	copied = ic_dns_copy(skb, &p, w);
	if (!copied || !(w->msg[2] & 0x80) || (w->msg[2] & 0x78) ||
	    !ic_dns_question(w, copied, work)) {
		ic_dns_total(IC_DTOTAL_MALFORMED);
		return 1;
	}
	if (!w->q.patterns && !w->q.feed)
		return 1;
	txid = (__u16)w->msg[0] << 8 | w->msg[1];
	for (int i = 0; i < IC_DNS_PENDING; i++) {
		struct ic_dns_pending *pending = &s->pending[i];

		if (pending->qhash == w->q.hash && pending->txid == txid &&
		    pending->port == p.peer_port && pending->qtype == w->q.qtype &&
		    ic_bytes_eq(pending->server, p.peer, 16)) {
			pending->qhash = 0;
			patterns = pending->patterns;
			matched = 1;
			break;
		}
	}
	if (!matched) {
		ic_dns_total(IC_DTOTAL_UNSOLICITED);
		return 1;
	}
	ic_dns_total(IC_DTOTAL_RESPONSES);
	/* A name of no rule that can match the socket's owner, and of no feed. */
	if (!patterns && !w->q.feed)
		return 1;
	ancount = (__u32)w->msg[6] << 8 | w->msg[7];
	if (ancount > IC_DNS_ANSWERS || p.msg_len > copied)
		ic_dns_total(IC_DTOTAL_OVERSIZED);
	ic_dns_event_head(w, s, &p, w->q.feed ? IC_DNS_EV_FEED_ANSWER : IC_DNS_EV_ANSWER);
	w->ev.patterns = patterns;
	a = &w->ans;
	__builtin_memset(a, 0, sizeof(*a));
	a->key.exe = s->exe;
	a->key.uid = s->uid;
	a->patterns = patterns;
	a->feed = w->q.feed;
	a->off = w->q.end;
	a->copied = copied;
	a->left = ancount > IC_DNS_ANSWERS ? IC_DNS_ANSWERS : ancount;
	a->now = ic_boot_sec();
	a->grace = cfg->grace_sec;
	a->max_ttl = cfg->max_ttl_sec;
	a->min_ttl = 0xffffffff;
	a->in_name = 1;
	if (a->left)
		bpf_loop(IC_DNS_ANSWERS * 130, ic_dns_answer_step, NULL, 0);
	if (a->bad)
		ic_dns_total(IC_DTOTAL_MALFORMED);
	if (a->naddrs == 0 && !w->q.feed)
		return 1;
	w->ev.naddrs = a->naddrs;
	w->ev.refused = a->refused;
	w->ev.ttl = a->naddrs ? a->min_ttl : 0;
	ic_dns_emit(w);
	return 1;
}

/* Marks a socket that sends to port 53 with its owner, so its DNS traffic is read. */
static __always_inline void ic_dns_mark(struct bpf_sock_addr *ctx, struct ic_conn *c)
{
	struct ic_dns_sock *s;
	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return;
	s = bpf_sk_storage_get(&ic_dns_socks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!s)
		return;
	ic_fill(c, IC_M_EXE | IC_M_COMM | IC_M_CGROUP);
	if (c->known) {
		s->exe = c->exe;
		s->ppid = c->ppid;
		s->pstart = c->pstart;
	} else {
		__builtin_memset(&s->exe, 0, sizeof(s->exe));
		s->ppid = 0;
		s->pstart = 0;
	}
	s->known = c->known;
	s->cgroup = c->cgroup;
	s->tgid = bpf_get_current_pid_tgid() >> 32;
	s->uid = c->uid;
	__builtin_memcpy(s->comm, c->comm, 16);
}

/* Whether the rule at `slot` matches the caller (a global function: verified once). */
__attribute__((noinline)) int ic_dns_candidate(struct ic_conn *c, __u32 slot)
{
	struct ic_egress_rule *rule;

	if (!c)
		return 0;
	rule = ic_rule_at(c->gen, slot);
	return rule && ic_rule_matches(rule, c);
}

/* The scan of the domain rules (bpf_loop context). */
struct ic_dns_scan {
	struct ic_conn *c;
	__u64 live;  /* the pattern bits open for the destination */
	__u32 best;  /* the slot to beat; the scan's answer */
	__u32 gen;
};

/* bpf_loop callback: domain rule `i` of the live generation (policy order): the
 * answer when its patterns are open and it matches the caller. A callback, so older
 * verifiers check one step rather than every path through 64. */
static long ic_dns_rule_step(__u64 i, struct ic_dns_scan *s)
{
	__u32 index = (s->gen & 1) * IC_DNS_RULES + (__u32)(i & (IC_DNS_RULES - 1));
	struct ic_dns_rule *r = bpf_map_lookup_elem(&ic_dns_rules, &index);
	__u32 slot;

	if (!r || r->slot == 0)
		return 1;
	slot = r->slot;
	if (slot >= s->best)
		return 1;
	if ((r->patterns & s->live) && ic_dns_candidate(s->c, slot)) {
		s->best = slot;
		return 1;
	}
	return 0;
}

/* The first domain rule before `best` whose patterns have the caller's destination
 * open for the caller's executable and that matches the caller; else `best`. */
__attribute__((noinline)) __u32 ic_dns_best(struct ic_conn *c, __u32 best)
{
	struct ic_dns_addr_key key __attribute__((aligned(8))) = {};
	struct ic_dns_scan scan = { .c = c, .best = best };
	struct ic_dns_addr *v;
	__u64 live = 0;
	__u32 now;

	if (!c)
		return best;
	if (c->known)
		key.exe = c->exe;
	key.uid = c->uid;
	__builtin_memcpy(key.addr, c->dst64, 16);
	v = bpf_map_lookup_elem(&ic_dns_addrs, &key);
	if (!v)
		return best;
	now = ic_boot_sec();
	/* Bit b when expires[b] > now: the sign of now - expires[b]. Arithmetic, not a
	 * branch, so the verifier walks the loop once rather than each combination. */
#pragma clang loop unroll(disable)
	for (int b = 0; b < IC_DNS_PATTERNS; b++) {
		__u64 d = (__u64)now - (__u64)v->expires[b];

		/* Or the compiler turns the sign back into a comparison and a branch. */
		barrier_var(d);
		live |= (d >> 63) << b;
	}
	live &= v->patterns;
	if (!live)
		return best;
	scan.live = live;
	scan.gen = c->gen & 1;
	bpf_loop(IC_DNS_RULES, ic_dns_rule_step, &scan, 0);
	return scan.best;
}

/* Whether the caller connects to encrypted DNS: port 853, or port 443 of a known
 * DNS-over-HTTPS resolver. */
static __always_inline int ic_dns_encrypted_to(struct ic_conn *c)
{
	/* Keys on this stack: older kernels take no map key from a global function's
	 * memory argument (c). */
	__u64 dst[2];

	if (c->port == 853)
		return 1;
	if (c->port != 443)
		return 0;
	__builtin_memcpy(dst, c->dst64, 16);
	return bpf_map_lookup_elem(&ic_dns_encrypted, dst) != NULL;
}

/* The feed (1-based) whose name resolved to the caller's destination, while its
 * answer's TTL lasts; else 0. */
static __always_inline __u32 ic_dns_feed_denied(struct ic_conn *c)
{
	__u64 dst[2];
	struct ic_dns_denial *d;

	__builtin_memcpy(dst, c->dst64, 16);
	d = bpf_map_lookup_elem(&ic_dns_denied, dst);

	if (!d || d->expires <= ic_boot_sec())
		return 0;
	return d->feed;
}

/* Returns 1 to let the call proceed, 0 to fail it with EPERM. A global function: the
 * verifier checks it once, not once per hook. */
__attribute__((noinline)) int ic_decide(struct ic_conn *c, __u8 hook, int is_connect)
{
	__u32 zero = 0, best = IC_EGRESS_MAX_RULES, needs;
	struct ic_egress_config *cfg = bpf_map_lookup_elem(&ic_egress_config, &zero);
	struct ic_egress_rule *rule = NULL;
	__u8 action;

	if (!cfg || !c)
		return 1;
	/* The fields the live rules compare; an ancestor is found from the process table
	 * and the rate limit is per executable, so both need the table's entry. */
	needs = cfg->needs & (IC_M_EXE | IC_M_COMM | IC_M_CGROUP | IC_M_ANCESTOR);
	if ((needs & IC_M_ANCESTOR) || (is_connect && cfg->rate_per_sec) ||
	    (cfg->kinds & (1 << IC_KEY_EXE)) || (cfg->flags & IC_EGRESS_F_DOMAINS))
		needs |= IC_M_EXE;
	if (cfg->kinds & (1 << IC_KEY_COMM))
		needs |= IC_M_COMM;
	if (cfg->kinds & (1 << IC_KEY_CGROUP))
		needs |= IC_M_CGROUP;
	ic_fill(c, needs);
	c->uid = ic_current_uid();
	c->gen = cfg->generation & 1;
	c->generation = cfg->generation;
	c->pidx = c->proto == IPPROTO_TCP ? 0 : c->proto == IPPROTO_UDP ? 1 : 2;

	/* An address a domain feed's name resolved to is refused before any rule. */
	if (cfg->flags & IC_EGRESS_F_DOMAINS) {
		__u32 feed = ic_dns_feed_denied(c);

		if (feed) {
			ic_dns_feed_count(feed, IC_DFEED_CONNECTS);
			ic_dns_total(IC_DTOTAL_CONNECT_DENIED);
			ic_total(IC_ETOTAL_DENIED);
			ic_report(c, 0, IC_EGRESS_DENY, hook, feed, 0);
			return 0;
		}
	}

	/* Every live rule names destinations: the filter's entry for this one says which
	 * key's rules name it. None: no rule can match and the default decides (most
	 * connections, against a list of networks). One: its search, when the caller has
	 * its identity. Several: each key's. */
	if (cfg->flags & IC_EGRESS_F_DST_FILTER) {
		best = ic_search_dst(c,
				     cfg->flags | ((needs & IC_M_ANCESTOR) ? 0 : IC_SEARCH_F_MEMO),
				     best);
		if (best != IC_SEARCH_KEYS)
			goto decided;
		best = IC_EGRESS_MAX_RULES;
	}
	/* Only the kinds of key the live rules have (most policies key one or two). */
	if (cfg->kinds & (1 << IC_KEY_ANY))
		best = ic_search_key(c, IC_KEY_ANY, best);
	if (c->known && (cfg->kinds & (1 << IC_KEY_EXE)))
		best = ic_search_key(c, IC_KEY_EXE, best);
	if (cfg->kinds & (1 << IC_KEY_COMM))
		best = ic_search_key(c, IC_KEY_COMM, best);
	if (cfg->kinds & (1 << IC_KEY_UID))
		best = ic_search_key(c, IC_KEY_UID, best);
	if (cfg->kinds & (1 << IC_KEY_CGROUP))
		best = ic_search_key(c, IC_KEY_CGROUP, best);

decided:
	/* The rules by name, whose destinations are the addresses answers opened. */
	if (cfg->flags & IC_EGRESS_F_DOMAINS)
		best = ic_dns_best(c, best);
	if (best < IC_EGRESS_MAX_RULES)
		rule = ic_rule_at(c->gen, best);
	if (rule) {
		__u32 id = rule->rule_id;
		__u64 *count = bpf_map_lookup_elem(&ic_egress_counters, &id);

		if (count)
			*count += 1;
		action = rule->action;
	} else {
		action = cfg->default_action;
	}
	if (action == IC_EGRESS_DENY) {
		ic_total(IC_ETOTAL_DENIED);
		ic_report(c, rule ? rule->rule_id : 0, IC_EGRESS_DENY, hook, 0, 0);
		return 0;
	}
	if (is_connect && !ic_rate_ok(cfg, c)) {
		ic_total(IC_ETOTAL_RATE_LIMITED);
		ic_report(c, rule ? rule->rule_id : 0, IC_EGRESS_RATE_LIMITED, hook, 0, 0);
		return 0;
	}
	if (action == IC_EGRESS_LOG) {
		ic_total(IC_ETOTAL_LOGGED);
		ic_report(c, rule ? rule->rule_id : 0, IC_EGRESS_LOG, hook, 0, 0);
	} else if (is_connect && (cfg->flags & IC_EGRESS_F_DOMAINS) && ic_dns_encrypted_to(c)) {
		/* Names resolved over an encrypted channel are never seen: say who does it. */
		ic_dns_total(IC_DTOTAL_ENCRYPTED);
		ic_report(c, rule ? rule->rule_id : 0, IC_EGRESS_LOG, hook, 0,
			  IC_EGRESS_NOTE_ENCRYPTED_DNS);
	}
	ic_total(IC_ETOTAL_ALLOWED);
	return 1;
}

static __always_inline void ic_dst4(struct ic_conn *c, __u32 ip4)
{
	c->dst[10] = 0xff;
	c->dst[11] = 0xff;
	__builtin_memcpy(&c->dst[12], &ip4, 4);
}

static __always_inline void ic_dst6(struct ic_conn *c, struct bpf_sock_addr *ctx)
{
	__u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1], w2 = ctx->user_ip6[2],
	      w3 = ctx->user_ip6[3];

	/* An IPv4-mapped address keeps its ::ffff:0:0/96 form: IPv4 rules match it. */
	__builtin_memcpy(&c->dst[0], &w0, 4);
	__builtin_memcpy(&c->dst[4], &w1, 4);
	__builtin_memcpy(&c->dst[8], &w2, 4);
	__builtin_memcpy(&c->dst[12], &w3, 4);
}

/* The decision, then the mark of a socket allowed to send to port 53 while domain
 * policy is live. */
static __always_inline int ic_hook(struct bpf_sock_addr *ctx, struct ic_conn *c, __u8 hook,
				   int is_connect)
{
	__u32 zero = 0;
	struct ic_egress_config *cfg;

	if (!ic_decide(c, hook, is_connect))
		return 0;
	if (c->port == 53) {
		cfg = bpf_map_lookup_elem(&ic_egress_config, &zero);
		if (cfg && (cfg->flags & IC_EGRESS_F_DOMAINS))
			ic_dns_mark(ctx, c);
	}
	return 1;
}

SEC("cgroup/connect4")
int ic_connect4(struct bpf_sock_addr *ctx)
{
	struct ic_conn c = {};

	c.port = bpf_ntohs(ctx->user_port);
	c.proto = ctx->protocol;
	ic_dst4(&c, ctx->user_ip4);
	return ic_hook(ctx, &c, IC_HOOK_CONNECT4, 1);
}

SEC("cgroup/connect6")
int ic_connect6(struct bpf_sock_addr *ctx)
{
	struct ic_conn c = {};

	c.port = bpf_ntohs(ctx->user_port);
	c.proto = ctx->protocol;
	ic_dst6(&c, ctx);
	return ic_hook(ctx, &c, IC_HOOK_CONNECT6, 1);
}

SEC("cgroup/sendmsg4")
int ic_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct ic_conn c = {};

	c.port = bpf_ntohs(ctx->user_port);
	c.proto = ctx->protocol;
	ic_dst4(&c, ctx->user_ip4);
	return ic_hook(ctx, &c, IC_HOOK_SENDMSG4, 0);
}

SEC("cgroup/sendmsg6")
int ic_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct ic_conn c = {};

	c.port = bpf_ntohs(ctx->user_port);
	c.proto = ctx->protocol;
	ic_dst6(&c, ctx);
	return ic_hook(ctx, &c, IC_HOOK_SENDMSG6, 0);
}

/* DNS queries leaving the cgroup's marked sockets (the rest pass untouched). */
SEC("cgroup_skb/egress")
int ic_dns_out(struct __sk_buff *skb)
{
	return ic_dns_query(skb);
}

/* DNS responses arriving at the cgroup's marked sockets, read before the socket gets
 * them. Always passed. */
SEC("cgroup_skb/ingress")
int ic_dns_in(struct __sk_buff *skb)
{
	return ic_dns_response(skb);
}
