/* SPDX-License-Identifier: MIT OR GPL-2.0-only */
/*
 * proctable.h - the process table shared by the objects that need to know who a
 * process is: map ic_procs (thread-group id -> struct ic_proc_info), kept by three BTF
 * tracepoint programs (exec, fork, exit) and seeded from /proc by user space.
 *
 * Include it once in an object; user space attaches ic_proc_exec, ic_proc_fork and
 * ic_proc_exit and seeds ic_procs (ironclad-bpf's procs module).
 */
#ifndef IRONCLAD_PROCTABLE_H
#define IRONCLAD_PROCTABLE_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "ironclad.h"
#include "proc.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, IC_EGRESS_IDENTITIES);
	__type(key, __u32); /* tgid */
	__type(value, struct ic_proc_info);
} ic_procs SEC(".maps");

const volatile struct ic_proc_info ic_abi_proc_info;

/* The start of the process `t` belongs to, in the ticks of /proc/PID/stat. */
static __always_inline __u64 ic_start_ticks(struct task_struct *t)
{
	return t->group_leader->start_boottime / IC_NSEC_PER_TICK;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(ic_proc_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct ic_proc_info info = {};
	__u32 tgid = p->tgid;
	__u64 ids = bpf_get_current_uid_gid();

	ic_exe_of_file(bprm->file, &info.exe);
	info.ppid = p->real_parent->tgid;
	info.start = ic_start_ticks(p);
	info.pstart = ic_start_ticks(p->real_parent);
	info.uid = (__u32)ids;
	info.gid = ids >> 32;
	info.cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(info.comm, sizeof(info.comm));
	bpf_map_update_elem(&ic_procs, &tgid, &info, BPF_ANY);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(ic_proc_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 parent_tgid = parent->tgid, child_tgid = child->tgid;
	struct ic_proc_info *info;

	if (child->pid != child->tgid)
		return 0; /* a new thread, same process */
	info = bpf_map_lookup_elem(&ic_procs, &parent_tgid);
	if (info) {
		struct ic_proc_info copy = *info;

		copy.ppid = parent_tgid;
		copy.start = ic_start_ticks(child);
		copy.pstart = ic_start_ticks(parent);
		bpf_map_update_elem(&ic_procs, &child_tgid, &copy, BPF_ANY);
	}
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(ic_proc_exit, struct task_struct *p)
{
	__u32 tgid = p->tgid;

	if (p->pid == p->tgid)
		bpf_map_delete_elem(&ic_procs, &tgid);
	return 0;
}

#endif /* IRONCLAD_PROCTABLE_H */
