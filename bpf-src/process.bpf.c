// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * process.bpf.c - the process monitor: one record per exec, fork and exit of every
 * process on the host, from the scheduler's BTF tracepoints, for the process cache in
 * user space (ironclad-bpf's process module).
 *
 * An exec record carries what only the moment of exec knows: the path as executed (the
 * filename argument of execve, which the kernel copied onto the new program's stack and
 * whose address linux_binprm.exec holds), the argument vector (read from the new
 * program's memory, mm->arg_start..arg_end), the executable's identity and the process's
 * own command name. A process that exits before its events are read is still named.
 *
 * Kernel strings cannot be read on a kernel in lockdown (bpf_probe_read_kernel is
 * refused), so both strings are read from user memory with bpf_probe_read_user.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "ironclad.h"
#include "proc.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, IC_PROC_RING_BYTES);
} ic_process_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IC_PSTAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} ic_process_stats SEC(".maps");

/* Types named here so their BTF reaches the skeleton (and ironclad-bpf's layout checks). */
const volatile struct ic_process_event ic_abi_process_event;
const volatile enum ic_process_limits ic_abi_process_limits = IC_PROC_PATH;
const volatile enum ic_process_op ic_abi_process_op = IC_PROC_OP_EXEC;
const volatile enum ic_process_flags ic_abi_process_flags = IC_PROC_F_SCRIPT;
const volatile enum ic_process_stat ic_abi_process_stat = IC_PSTAT_COUNT;
const volatile enum ic_event_kind ic_abi_process_kind = IC_EVENT_PROCESS;

static __always_inline void ic_pstat(__u32 index)
{
	__u64 *n = bpf_map_lookup_elem(&ic_process_stats, &index);

	if (n)
		*n += 1;
}

/* Reserves a record and fills the fields every op has, from task p (the process's
 * thread that the tracepoint names). Returns NULL (and counts the loss) if the ring is
 * full. */
static __always_inline struct ic_process_event *ic_begin(struct task_struct *p, __u8 op)
{
	struct ic_process_event *e;
	struct task_struct *leader = p->group_leader;
	struct mm_struct *mm = p->mm;
	__u64 ids = bpf_get_current_uid_gid();

	e = bpf_ringbuf_reserve(&ic_process_events, sizeof(*e), 0);
	if (!e) {
		ic_pstat(IC_PSTAT_LOST);
		return NULL;
	}
	__builtin_memset(e, 0, offsetof(struct ic_process_event, path));
	e->hdr.version = IC_ABI_VERSION;
	e->hdr.kind = IC_EVENT_PROCESS;
	e->hdr.size = sizeof(*e);
	e->hdr.ktime_ns = bpf_ktime_get_ns();
	e->op = op;
	e->pid = p->tgid;
	e->ppid = p->real_parent->tgid;
	/* fork runs in the parent, whose credentials the child copies; exec and exit run
	 * in the process itself */
	e->uid = (__u32)ids;
	e->gid = ids >> 32;
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->start_ns = leader->start_boottime;
	__builtin_memcpy(e->comm, leader->comm, sizeof(e->comm));
	if (mm && mm->exe_file)
		ic_exe_of_file(mm->exe_file, &e->exe);
	e->path[0] = 0;
	e->args[0] = 0;
	return e;
}

/* Wakes the reader only when the ring is half full: a wake-up per record would cost
 * every process on the host a context switch or more. The reader also reads every 100 ms
 * and before each lookup, so no record waits longer than that. */
static __always_inline void ic_commit(struct ic_process_event *e)
{
	__u64 flags = bpf_ringbuf_query(&ic_process_events, BPF_RB_AVAIL_DATA) >
			      IC_PROC_RING_BYTES / 2 ?
			      BPF_RB_FORCE_WAKEUP :
			      BPF_RB_NO_WAKEUP;

	bpf_ringbuf_submit(e, flags);
	ic_pstat(IC_PSTAT_EVENTS);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(ic_process_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct ic_process_event *e = ic_begin(p, IC_PROC_OP_EXEC);
	struct mm_struct *mm = p->mm;
	unsigned long start, end, len;
	long n;

	if (!e)
		return 0;
	/* the executed file (for a script: its interpreter), as bprm holds it */
	ic_exe_of_file(bprm->file, &e->exe);
	/* binfmt_script and binfmt_misc point interp elsewhere than filename */
	if (bprm->interp != bprm->filename)
		e->flags |= IC_PROC_F_SCRIPT;
	n = bpf_probe_read_user_str(e->path, sizeof(e->path), (void *)bprm->exec);
	if (n > 0) {
		e->path_len = n - 1;
		if (n == sizeof(e->path))
			e->flags |= IC_PROC_F_PATH_TRUNCATED;
	} else {
		e->path[0] = 0;
	}
	start = mm->arg_start;
	end = mm->arg_end;
	len = end > start ? end - start : 0;
	if (len > IC_PROC_ARGS) {
		len = IC_PROC_ARGS;
		e->flags |= IC_PROC_F_ARGS_TRUNCATED;
	}
	if (len && !bpf_probe_read_user(e->args, len, (void *)start))
		e->args_len = len;
	ic_commit(e);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(ic_process_fork, struct task_struct *parent, struct task_struct *child)
{
	struct ic_process_event *e;

	if (child->pid != child->tgid)
		return 0; /* a new thread of the same process */
	e = ic_begin(child, IC_PROC_OP_FORK);
	if (!e)
		return 0;
	/* real_parent is set by now; a CLONE_PARENT child's parent is the caller's */
	e->ppid = child->real_parent->tgid;
	ic_commit(e);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(ic_process_exit, struct task_struct *p)
{
	struct ic_process_event *e;

	/* signal->live counts the group's threads that have not begun exiting; it reached
	 * zero before this tracepoint when p is the group's last thread */
	if (p->signal->live.counter != 0)
		return 0;
	e = ic_begin(p, IC_PROC_OP_EXIT);
	if (!e)
		return 0;
	e->exit_code = p->exit_code;
	ic_commit(e);
	return 0;
}
