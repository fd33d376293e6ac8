// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * tls.bpf.c - TLS plaintext from OpenSSL through uprobes.
 *
 * Entry probes on SSL_write, SSL_write_ex, SSL_read and SSL_read_ex stash the call's
 * arguments per thread; return probes learn how many bytes moved and copy up to the
 * configured cap into the ring buffer in chunks of IC_TLS_CHUNK bytes. Capture is off
 * unless the calling process is in scope: by pid, cgroup, comm or executable identity.
 * The executable of every process comes from the shared process table
 * (lib/proctable.h: BTF tracepoints on exec, fork, exit), never from a path.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>
#include "ironclad.h"
#include "proctable.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Socket families (linux/socket.h; vmlinux.h has no macros). */
#define IC_AF_INET 2
#define IC_AF_INET6 10

/* ic_tls_args.direction of a handshake in flight: learns the socket, reports nothing. */
#define IC_TLS_HANDSHAKE 0

/* A call in flight on one thread, from the entry probe to the return probe. Kept in the
 * thread's task storage: no hash update and delete per call, and it ends with the
 * thread. */
struct ic_tls_args {
	__u64 ssl;
	__u64 buf;
	__u64 count_ptr; /* size_t * of the _ex variants, else 0 */
	struct ic_exe_id exe; /* the process's executable, as the scope check found it */
	struct ic_tls_sock sock; /* the TCP socket the call read from (ic_tls_sock_read) */
	__u8 direction;
	__u8 active; /* set by the entry probe, cleared by the return probe */
	__u8 _pad[6];
};

#ifdef IC_COMPAT
/* The build for kernels without task storage (before 5.11) or bpf_loop (before 5.17),
 * which the loader picks where the kernel's BTF lacks them: the calls in flight by
 * thread id (pid_tgid) in an LRU hash. A thread that ends inside a call leaves its entry
 * until the LRU evicts it; so many threads in SSL calls at once that one call's entry
 * is evicted lose that call's capture, nothing else. */
#define IC_TLS_INFLIGHT 16384

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, IC_TLS_INFLIGHT);
	__type(key, __u64);
	__type(value, struct ic_tls_args);
} ic_tls_inflight SEC(".maps");

/* The calling thread's call in flight; with `create`, made (zeroed) if missing. */
static __always_inline struct ic_tls_args *ic_inflight(int create)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ic_tls_args *args = bpf_map_lookup_elem(&ic_tls_inflight, &id);

	if (args || !create)
		return args;
	{
		struct ic_tls_args fresh = {};

		bpf_map_update_elem(&ic_tls_inflight, &id, &fresh, BPF_NOEXIST);
	}
	return bpf_map_lookup_elem(&ic_tls_inflight, &id);
}
#else
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ic_tls_args);
} ic_tls_inflight SEC(".maps");

/* The calling thread's call in flight; with `create`, made (zeroed) if missing. */
static __always_inline struct ic_tls_args *ic_inflight(int create)
{
	return bpf_task_storage_get(&ic_tls_inflight, bpf_get_current_task_btf(), 0,
				    create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}
#endif

/* The socket each SSL connection last used, for calls that use none (an SSL_read served
 * from bytes already decrypted). Keyed by process and SSL*: the pointer is only unique
 * within a process. */
struct ic_tls_sock_key {
	__u64 ssl;
	__u32 tgid;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, IC_TLS_SOCKS);
	__type(key, struct ic_tls_sock_key);
	__type(value, struct ic_tls_sock);
} ic_tls_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, IC_TLS_SCOPE_ENTRIES);
	__type(key, __u32); /* tgid */
	__type(value, __u8);
} ic_tls_scope_pid SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, IC_TLS_SCOPE_ENTRIES);
	__type(key, __u64); /* cgroup id */
	__type(value, __u8);
} ic_tls_scope_cgroup SEC(".maps");

struct ic_comm_key {
	__u8 comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, IC_TLS_SCOPE_ENTRIES);
	__type(key, struct ic_comm_key);
	__type(value, __u8);
} ic_tls_scope_comm SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, IC_TLS_SCOPE_ENTRIES);
	__type(key, struct ic_exe_id);
	__type(value, __u8);
} ic_tls_scope_exe SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ic_tls_config);
} ic_tls_config SEC(".maps");

/* Per-process byte budget: window start and bytes reported in it. */
struct ic_tls_budget {
	__u64 window_ns;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, IC_TLS_PROCESSES);
	__type(key, __u32);
	__type(value, struct ic_tls_budget);
} ic_tls_budget SEC(".maps");

/* [0]: chunks lost to a full ring buffer; [1]: bytes withheld by the per-second budget;
 * [2]: per-CPU call sequence. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} ic_tls_stats SEC(".maps");

#define IC_TLS_RING_BYTES (4 * 1024 * 1024)
#define IC_TLS_WAKE_BYTES (IC_TLS_RING_BYTES / 4)

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, IC_TLS_RING_BYTES);
} ic_tls_events SEC(".maps");

/* Pids of processes that came into scope (exec, or fork of an in-scope process): user
 * space attaches the probes to each of them, so a process out of scope carries no
 * breakpoint at all. Woken at once: the attach races the program's first SSL call. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 65536);
} ic_tls_starts SEC(".maps");

const volatile enum ic_tls_direction ic_abi_tls_direction = IC_TLS_WRITE;
const volatile enum ic_tls_flags ic_abi_tls_flags = IC_TLS_F_TRUNCATED;
const volatile enum ic_tls_limits ic_abi_tls_limits = IC_TLS_CHUNK;
const volatile enum ic_event_kind ic_abi_tls_kind = IC_EVENT_TLS;
const volatile struct ic_tls_event ic_abi_tls_event;

static __always_inline void ic_stat(__u32 index, __u64 add)
{
	__u64 *v = bpf_map_lookup_elem(&ic_tls_stats, &index);

	if (v)
		*v += add;
}

/* ---- scope ---- */

/* Whether the calling process is in scope; `exe` receives its executable (zeros if the
 * process table does not know it). */
static __always_inline int ic_in_scope(__u32 tgid, struct ic_exe_id *exe)
{
	struct ic_comm_key comm = {};
	struct ic_proc_info *info;
	__u64 cgroup;

	info = bpf_map_lookup_elem(&ic_procs, &tgid);
	if (info) {
		exe->dev = info->exe.dev;
		exe->ino = info->exe.ino;
	}
	if (bpf_map_lookup_elem(&ic_tls_scope_pid, &tgid))
		return 1;
	cgroup = bpf_get_current_cgroup_id();
	if (bpf_map_lookup_elem(&ic_tls_scope_cgroup, &cgroup))
		return 1;
	bpf_get_current_comm(comm.comm, sizeof(comm.comm));
	if (bpf_map_lookup_elem(&ic_tls_scope_comm, &comm))
		return 1;
	return info && bpf_map_lookup_elem(&ic_tls_scope_exe, exe);
}

/* Whether a process starting now is in scope: by pid, cgroup, comm or the identity
 * of the file it runs (given, as the process table may not have it yet). */
static __always_inline int ic_starts_in_scope(__u32 tgid, struct file *file, const __u8 *comm16)
{
	struct ic_comm_key comm = {};
	struct ic_exe_id exe = {};
	__u64 cgroup = bpf_get_current_cgroup_id();

	if (bpf_map_lookup_elem(&ic_tls_scope_pid, &tgid))
		return 1;
	if (bpf_map_lookup_elem(&ic_tls_scope_cgroup, &cgroup))
		return 1;
	__builtin_memcpy(comm.comm, comm16, sizeof(comm.comm));
	if (bpf_map_lookup_elem(&ic_tls_scope_comm, &comm))
		return 1;
	if (file) {
		exe.dev = file->f_inode->i_sb->s_dev;
		exe.ino = file->f_inode->i_ino;
		if (bpf_map_lookup_elem(&ic_tls_scope_exe, &exe))
			return 1;
	}
	return 0;
}

static __always_inline void ic_report_start(__u32 tgid)
{
	__u32 *slot = bpf_ringbuf_reserve(&ic_tls_starts, sizeof(*slot), 0);

	if (slot) {
		*slot = tgid;
		bpf_ringbuf_submit(slot, 0);
	}
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(ic_tls_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	/* Zeroed: on some kernels (Debian 12's 6.1) the helper copies up to the name's
	 * NUL and leaves the rest of the buffer as it was; the comm key then missed the
	 * scope map, so a program coming into scope by its name was never attached. */
	__u8 comm[16] = {};

	bpf_get_current_comm(comm, sizeof(comm));
	if (ic_starts_in_scope(p->tgid, bprm->file, comm))
		ic_report_start(p->tgid);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(ic_tls_fork, struct task_struct *parent, struct task_struct *child)
{
	struct mm_struct *mm = child->mm;
	__u8 comm[16];

	if (child->pid != child->tgid)
		return 0; /* a thread: the process's probes cover it */
	__builtin_memcpy(comm, child->comm, sizeof(comm));
	if (ic_starts_in_scope(child->tgid, mm ? mm->exe_file : NULL, comm))
		ic_report_start(child->tgid);
	return 0;
}

static __always_inline int ic_enter(__u64 ssl, __u64 buf, __u64 count_ptr, __u8 direction)
{
	struct ic_exe_id exe = {};
	struct ic_tls_args *slot;

	if (!ic_in_scope(bpf_get_current_pid_tgid() >> 32, &exe))
		return 0;
	slot = ic_inflight(1);
	if (!slot)
		return 0;
	/* A handshake inside a read or write call belongs to that call. */
	if (direction == IC_TLS_HANDSHAKE && slot->active)
		return 0;
	slot->ssl = ssl;
	slot->buf = buf;
	slot->count_ptr = count_ptr;
	slot->exe = exe;
	slot->sock.family = 0;
	slot->direction = direction;
	slot->active = 1;
	return 0;
}

/* The calling thread received bytes from socket `sk`: if an SSL call is in flight on it,
 * that is the call's connection. The first socket of the call wins. Direct BTF reads
 * (bpf_probe_read_kernel is refused under lockdown). */
static __always_inline void ic_sock_seen(struct sock *sk)
{
	struct ic_tls_args *args;
	struct ic_tls_sock *out;
	__u16 family;

	if (!sk)
		return;
	args = ic_inflight(0);
	if (!args || !args->active || args->sock.family)
		return;
	family = sk->__sk_common.skc_family;
	if (sk->sk_protocol != IPPROTO_TCP || (family != IC_AF_INET && family != IC_AF_INET6))
		return;
	out = &args->sock;
	__builtin_memset(out, 0, sizeof(*out));
	if (family == IC_AF_INET) {
		__u32 local = sk->__sk_common.skc_rcv_saddr, remote = sk->__sk_common.skc_daddr;

		__builtin_memcpy(out->laddr, &local, 4);
		__builtin_memcpy(out->raddr, &remote, 4);
	} else {
		__u32 word;

		/* Word by word: each is one load the verifier checks against the BTF. */
#define IC_COPY_WORD(i)                                                                  \
	word = sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[i];                      \
	__builtin_memcpy(out->laddr + 4 * (i), &word, 4);                                \
	word = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[i];                          \
	__builtin_memcpy(out->raddr + 4 * (i), &word, 4);
		IC_COPY_WORD(0)
		IC_COPY_WORD(1)
		IC_COPY_WORD(2)
		IC_COPY_WORD(3)
#undef IC_COPY_WORD
	}
	out->lport = sk->__sk_common.skc_num;
	out->rport = bpf_ntohs(sk->__sk_common.skc_dport);
	out->family = family;
}

/* Received bytes are copied to the reader's buffer: always in the reading thread (a
 * receive in softirq context never copies to user memory), so the thread that is in an
 * SSL call here is the one reading from this socket. The handshake reads on both sides,
 * so every connection is seen here before its first SSL_write. */
SEC("tp_btf/skb_copy_datagram_iovec")
int BPF_PROG(ic_tls_sock_read, const struct sk_buff *skb, int len)
{
	ic_sock_seen(skb->sk);
	return 0;
}

/* Applies the per-process per-second budget; returns how many bytes may be reported. */
static __always_inline __u32 ic_budget(__u32 tgid, __u32 want, struct ic_tls_config *cfg)
{
	struct ic_tls_budget *b;
	__u64 now;

	if (!cfg->bytes_per_sec)
		return want;
	now = bpf_ktime_get_ns();
	b = bpf_map_lookup_elem(&ic_tls_budget, &tgid);
	if (!b) {
		struct ic_tls_budget fresh = { .window_ns = now, .bytes = 0 };

		bpf_map_update_elem(&ic_tls_budget, &tgid, &fresh, BPF_ANY);
		b = bpf_map_lookup_elem(&ic_tls_budget, &tgid);
		if (!b)
			return 0;
	}
	if (now > b->window_ns && now - b->window_ns >= 1000000000ULL) {
		b->window_ns = now;
		b->bytes = 0;
	}
	if (b->bytes >= cfg->bytes_per_sec)
		return 0;
	if (want > cfg->bytes_per_sec - b->bytes)
		want = cfg->bytes_per_sec - b->bytes;
	b->bytes += want;
	return want;
}

/* Everything one chunk needs, on the stack of the return probe. */
struct ic_chunk_ctx {
	__u64 ssl;
	__u64 buf;
	__u64 call_id;
	__u64 cgroup;
	__u64 pid_tgid;
	__u64 report;
	__u64 total;
	__u32 uid;
	__u8 direction;
	__u8 _pad[3];
	__u8 comm[16];
	struct ic_exe_id exe;
	struct ic_tls_sock sock;
};

/* Fills and submits one record of `size` bytes (a constant at each call, which the
 * verifier needs to bound the copy) with `len` bytes at `offset` of the call's data. */
static __always_inline void ic_fill(struct ic_tls_event *e, __u32 size, struct ic_chunk_ctx *c,
				    __u64 offset, __u64 len)
{
	e->hdr.version = IC_ABI_VERSION;
	e->hdr.kind = IC_EVENT_TLS;
	e->hdr.size = size;
	e->hdr.ktime_ns = bpf_ktime_get_ns();
	e->ssl = c->ssl;
	e->call_id = c->call_id;
	e->cgroup_id = c->cgroup;
	e->pid = c->pid_tgid >> 32;
	e->tid = (__u32)c->pid_tgid;
	e->uid = c->uid;
	e->total_len = c->total;
	e->offset = offset;
	e->len = len;
	e->direction = c->direction;
	e->flags = 0;
	if (offset + len >= c->report) {
		e->flags |= IC_TLS_F_LAST;
		if (c->report < c->total)
			e->flags |= IC_TLS_F_TRUNCATED;
	}
	__builtin_memset(e->_pad0, 0, sizeof(e->_pad0));
	__builtin_memcpy(e->comm, c->comm, sizeof(e->comm));
	e->exe = c->exe;
	e->sock = c->sock;
	barrier_var(len);
	if (len > 0 && len <= size - offsetof(struct ic_tls_event, data) &&
	    bpf_probe_read_user(e->data, len, (void *)(c->buf + offset)))
		e->len = 0;
	/* Waking the reader for each record costs the writing program more than the
	 * capture itself (an interrupt and a wakeup on another CPU per SSL call); the
	 * reader also drains on its poll interval, so wake it only when a quarter of the
	 * ring is waiting. */
	bpf_ringbuf_submit(e, bpf_ringbuf_query(&ic_tls_events, BPF_RB_AVAIL_DATA) >=
				      IC_TLS_WAKE_BYTES ?
				      BPF_RB_FORCE_WAKEUP :
				      BPF_RB_NO_WAKEUP);
}

#define IC_TLS_SMALL_RECORD (offsetof(struct ic_tls_event, data) + IC_TLS_SMALL_CHUNK)

/* Reports chunk `index` of the call (also the bpf_loop callback; in the IC_COMPAT build
 * called from a bounded loop). Returns 1 to stop. */
static long ic_emit_chunk(__u64 index, struct ic_chunk_ctx *c)
{
	struct ic_tls_event *e;
	/* 64-bit unsigned arithmetic keeps the verifier's bounds on len exact. */
	__u64 offset = index * IC_TLS_CHUNK;
	__u64 len = 0;

	/* One event even when nothing may be reported, to say so. */
	if (index > 0 && offset >= c->report)
		return 1;
	if (c->report > offset) {
		len = c->report - offset;
		if (len > IC_TLS_CHUNK)
			len = IC_TLS_CHUNK;
	}
	if (len <= IC_TLS_SMALL_CHUNK) {
		e = bpf_ringbuf_reserve(&ic_tls_events, IC_TLS_SMALL_RECORD, 0);
		if (e)
			ic_fill(e, IC_TLS_SMALL_RECORD, c, offset, len);
	} else {
		e = bpf_ringbuf_reserve(&ic_tls_events, sizeof(*e), 0);
		if (e)
			ic_fill(e, sizeof(*e), c, offset, len);
	}
	if (!e)
		ic_stat(0, 1);
	return 0;
}

static __always_inline int ic_leave(long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct ic_chunk_ctx c = {};
	struct ic_tls_config *cfg;
	struct ic_tls_args *args;
	__u32 zero = 0, seq_index = 2, allowed;
	__u64 *seq;

	args = ic_inflight(0);
	if (!args || !args->active || args->direction == IC_TLS_HANDSHAKE)
		return 0;
	args->active = 0;
	c.ssl = args->ssl;
	c.buf = args->buf;
	c.direction = args->direction;
	c.exe = args->exe;
	{
		struct ic_tls_sock_key key = { .ssl = args->ssl, .tgid = pid_tgid >> 32 };
		struct ic_tls_sock *known;

		if (args->sock.family) {
			c.sock = args->sock;
			bpf_map_update_elem(&ic_tls_socks, &key, &c.sock, BPF_ANY);
		} else {
			known = bpf_map_lookup_elem(&ic_tls_socks, &key);
			if (known)
				c.sock = *known;
		}
	}
	if (args->count_ptr) {
		size_t moved = 0;

		/* 1 from the public _ex functions; any success from the internal function
		 * they forward to, where the probes may sit (see tls.rs, probe placement). */
		if (ret > 0)
			bpf_probe_read_user(&moved, sizeof(moved), (void *)args->count_ptr);
		c.total = moved;
	} else if (ret > 0) {
		c.total = ret;
	}
	cfg = bpf_map_lookup_elem(&ic_tls_config, &zero);
	if (!c.total || !cfg)
		return 0;
	c.report = c.total > cfg->max_bytes ? cfg->max_bytes : c.total;
	if (c.report > IC_TLS_CHUNK * IC_TLS_MAX_CHUNKS)
		c.report = IC_TLS_CHUNK * IC_TLS_MAX_CHUNKS;
	allowed = ic_budget(pid_tgid >> 32, c.report, cfg);
	if (allowed < c.report)
		ic_stat(1, c.report - allowed);
	c.report = allowed;
	seq = bpf_map_lookup_elem(&ic_tls_stats, &seq_index);
	c.call_id = seq ? ((*seq)++ << 8) | bpf_get_smp_processor_id() : 0;
	c.cgroup = bpf_get_current_cgroup_id();
	c.uid = bpf_get_current_uid_gid();
	c.pid_tgid = pid_tgid;
	bpf_get_current_comm(c.comm, sizeof(c.comm));
	/* Most calls fit one chunk: no loop for them. */
	if (c.report <= IC_TLS_CHUNK)
		ic_emit_chunk(0, &c);
	else
#ifdef IC_COMPAT
		/* A bounded loop (5.3+): the verifier walks each of its 64 turns. */
		for (__u64 i = 0; i < IC_TLS_MAX_CHUNKS; i++)
			if (ic_emit_chunk(i, &c))
				break;
#else
		bpf_loop(IC_TLS_MAX_CHUNKS, ic_emit_chunk, &c, 0);
#endif
	return 0;
}

/* SSL_do_handshake (SSL_connect and SSL_accept call it): the socket the handshake
 * reads from becomes the connection's, for the writes that follow. */
SEC("uprobe")
int BPF_UPROBE(ic_ssl_handshake, void *ssl)
{
	return ic_enter((__u64)ssl, 0, 0, IC_TLS_HANDSHAKE);
}

SEC("uretprobe")
int BPF_URETPROBE(ic_ssl_handshake_ret, int ret)
{
	struct ic_tls_args *args;
	struct ic_tls_sock_key key = {};

	args = ic_inflight(0);
	if (!args || !args->active || args->direction != IC_TLS_HANDSHAKE)
		return 0;
	args->active = 0;
	if (!args->sock.family)
		return 0;
	key.ssl = args->ssl;
	key.tgid = bpf_get_current_pid_tgid() >> 32;
	bpf_map_update_elem(&ic_tls_socks, &key, &args->sock, BPF_ANY);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(ic_ssl_write, void *ssl, const void *buf, int num)
{
	return ic_enter((__u64)ssl, (__u64)buf, 0, IC_TLS_WRITE);
}

SEC("uretprobe")
int BPF_URETPROBE(ic_ssl_write_ret, int ret)
{
	return ic_leave(ret);
}

SEC("uprobe")
int BPF_UPROBE(ic_ssl_write_ex, void *ssl, const void *buf, size_t num, size_t *written)
{
	return ic_enter((__u64)ssl, (__u64)buf, (__u64)written, IC_TLS_WRITE);
}

SEC("uretprobe")
int BPF_URETPROBE(ic_ssl_write_ex_ret, int ret)
{
	return ic_leave(ret);
}

SEC("uprobe")
int BPF_UPROBE(ic_ssl_read, void *ssl, void *buf, int num)
{
	return ic_enter((__u64)ssl, (__u64)buf, 0, IC_TLS_READ);
}

SEC("uretprobe")
int BPF_URETPROBE(ic_ssl_read_ret, int ret)
{
	return ic_leave(ret);
}

SEC("uprobe")
int BPF_UPROBE(ic_ssl_read_ex, void *ssl, void *buf, size_t num, size_t *readbytes)
{
	return ic_enter((__u64)ssl, (__u64)buf, (__u64)readbytes, IC_TLS_READ);
}

SEC("uretprobe")
int BPF_URETPROBE(ic_ssl_read_ex_ret, int ret)
{
	return ic_leave(ret);
}
