// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * sentinel.bpf.c - BPF-LSM self-defense: the agent's files, BPF objects and process are
 * refused to everyone but the registered agent (and, for files and signals, the update
 * manager), and changes to monitored files are reported.
 *
 * Files are known by inode (device + inode number) in ic_sentinel_nodes; a directory
 * flagged IC_SEN_TREE covers everything below it, found by walking up to IC_SEN_DEPTH
 * parents of the dentry at hand, so files created in it later are covered too.
 *
 * The agent is a process, not an executable: it registers once through
 * prctl(IC_SEN_PRCTL_REGISTER), which is accepted only for an executable flagged IC_SEN_AGENT
 * (or living in a directory flagged IC_SEN_AGENT_DIR) while no agent is registered. The
 * mark is task storage of the thread-group leader, so it dies with the process; an exec
 * ends it too (the mark holds the executable it registered with). The IC_COMPAT build
 * (Linux 5.10) keeps it in a hash keyed by tgid, removed when the leader is freed.
 *
 * Hooks and what they close:
 *   file_open           write-opens (incl. O_TRUNC/O_APPEND, io_uring openat)
 *   file_permission     writes through an open file (reported on monitored files)
 *   path_truncate       truncate(2)
 *   path_chmod/chown    chmod, chown
 *   inode_setxattr/removexattr   extended attributes
 *   inode_unlink/rmdir  rm, rm -rf, unpinning
 *   inode_rename        mv to or from, and renaming a directory above a protected path
 *   inode_link          hard links to a protected file or into a protected directory
 *   inode_create/mkdir/mknod/symlink   new entries in a protected directory
 *   sb_mount/move_mount mounting over a protected path or a directory above one (a
 *                       change of propagation only, as `ip netns exec` makes, passes)
 *   bpf_map             writable fds to protected maps (GET_FD_BY_ID, OBJ_GET of a pin)
 *   bpf                 fds to protected links (LINK_GET_FD_BY_ID), and LINK_DETACH /
 *                       LINK_UPDATE of one through any fd (e.g. from OBJ_GET of its pin)
 *   netlink_send        tc filter/chain changes and clsact qdisc removal on protected
 *                       interfaces (every message of a batch is read)
 *   bpf (LINK_CREATE, PROG_ATTACH)   tcx attachments on protected interfaces, so that
 *                       nobody runs a program that passes traffic before the firewall
 *   task_kill           signals to the agent other than harmless ones
 *   ptrace_access_check ptrace attach, /proc/pid/mem, process_vm_writev, pidfd_getfd
 *   task_prctl          the registration handshake
 *   task_free           the registration ends with the agent
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "ironclad.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define IC_EPERM 1
#define IC_ENOSYS 38
#define IC_FMODE_WRITE 0x2
#define IC_MAY_WRITE 0x2
#define IC_MAY_APPEND 0x8
#define IC_PTRACE_MODE_ATTACH 0x02

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, IC_SEN_NODES);
	__type(key, struct ic_inode_key);
	__type(value, struct ic_sentinel_node);
} ic_sentinel_nodes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, IC_SEN_OBJECTS);
	__type(key, struct ic_bpf_object_key);
	__type(value, __u32);
} ic_sentinel_objects SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ic_sentinel_config);
} ic_sentinel_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ic_sentinel_state);
} ic_sentinel_state SEC(".maps");

#ifdef IC_COMPAT
/* The build for kernels without task storage and bpf_get_current_task_btf (before
 * 5.11), which the loader picks where the kernel's BTF lacks them: the mark is keyed by
 * the agent's tgid, removed when its thread-group leader is freed (task_free), and the
 * current task is read with probe reads (bpf_get_current_task), as is every pointer
 * reached from it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, struct ic_agent_mark);
} ic_sentinel_agent SEC(".maps");

#define IC_CURRENT_TASK() ((struct task_struct *)bpf_get_current_task())
/* The registration's lock in ic_sentinel_agent (task_prctl). */
#define IC_AGENT_LOCK 0
#else
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ic_agent_mark);
} ic_sentinel_agent SEC(".maps");

#define IC_CURRENT_TASK() bpf_get_current_task_btf()
#endif

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, IC_SEN_RING_BYTES);
} ic_sentinel_events SEC(".maps");

/* Events the ring buffer had no room for (per-CPU, index 0). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} ic_sentinel_lost SEC(".maps");

/* Keep the ABI enums in BTF. */
const volatile enum ic_sentinel_limits ic_abi_sentinel_limits = IC_SEN_NODES;
const volatile enum ic_sentinel_op ic_abi_sentinel_op = IC_SEN_OP_OPEN_WRITE;
const volatile enum ic_sentinel_verdict ic_abi_sentinel_verdict = IC_SEN_DENIED;
const volatile enum ic_sentinel_node_flags ic_abi_sentinel_node = IC_SEN_PROTECT;
const volatile enum ic_bpf_object_kind ic_abi_bpf_object = IC_BPF_MAP;
const volatile enum ic_sentinel_flags ic_abi_sentinel_flags = IC_SEN_F_ENFORCE;
const volatile enum ic_event_kind ic_abi_sentinel_kind = IC_EVENT_SENTINEL;
const volatile struct ic_sentinel_event ic_abi_sentinel_event;

static __always_inline void inode_id(struct inode *inode, struct ic_exe_id *out)
{
#ifdef IC_COMPAT
	out->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	out->ino = BPF_CORE_READ(inode, i_ino);
#else
	out->dev = inode->i_sb->s_dev;
	out->ino = inode->i_ino;
#endif
}

static __always_inline __u32 node_flags(struct inode *inode)
{
	struct ic_inode_key key = {};
	struct ic_sentinel_node *node;

	if (!inode)
		return 0;
#ifdef IC_COMPAT
	key.ino = BPF_CORE_READ(inode, i_ino);
	key.dev = BPF_CORE_READ(inode, i_sb, s_dev);
#else
	key.ino = inode->i_ino;
	key.dev = inode->i_sb->s_dev;
#endif
	node = bpf_map_lookup_elem(&ic_sentinel_nodes, &key);
	return node ? node->flags : 0;
}

/* The flags that apply to a dentry: its inode's own, plus PROTECT/MONITOR of every
 * IC_SEN_TREE directory above it (within its filesystem). */
static __always_inline __u32 dentry_flags(struct dentry *dentry)
{
	struct dentry *d = dentry;
	__u32 flags;

	if (!dentry)
		return 0;
	flags = node_flags(dentry->d_inode);
	for (int i = 0; i < IC_SEN_DEPTH; i++) {
		struct dentry *parent = d->d_parent;
		__u32 f;

		if (!parent || parent == d)
			break;
		d = parent;
		f = node_flags(d->d_inode);
		if (f & IC_SEN_TREE)
			flags |= f & (IC_SEN_PROTECT | IC_SEN_MONITOR);
	}
	return flags;
}

static __always_inline struct ic_sentinel_config *sentinel_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&ic_sentinel_config, &zero);
}

/* The inode of the executable `task` runs (NULL for kernel threads). */
static __always_inline struct inode *exe_inode(struct task_struct *task)
{
#ifdef IC_COMPAT
	return BPF_CORE_READ(task, mm, exe_file, f_inode);
#else
	struct mm_struct *mm = task->mm;
	struct file *exe;

	if (!mm)
		return 0;
	exe = mm->exe_file;
	return exe ? exe->f_inode : 0;
#endif
}

static __always_inline int exe_of(struct task_struct *task, struct ic_exe_id *out)
{
	struct inode *inode = exe_inode(task);

	if (!inode)
		return 0;
	inode_id(inode, out);
	return 1;
}

/* Whether `task`'s process is the registered agent, still running the executable it
 * registered with. */
static __always_inline int task_is_agent(struct task_struct *task)
{
	struct ic_agent_mark *mark;
	struct ic_exe_id exe = {};

#ifdef IC_COMPAT
	{
		__u32 tgid = BPF_CORE_READ(task, tgid);

		mark = bpf_map_lookup_elem(&ic_sentinel_agent, &tgid);
	}
#else
	mark = bpf_task_storage_get(&ic_sentinel_agent, task->group_leader, 0, 0);
#endif
	if (!mark)
		return 0;
	if (!exe_of(task, &exe))
		return 0;
	return exe.dev == mark->exe.dev && exe.ino == mark->exe.ino;
}

static __always_inline int current_is_agent(void)
{
	return task_is_agent(IC_CURRENT_TASK());
}

static __always_inline int current_is_manager(void)
{
	return (node_flags(exe_inode(IC_CURRENT_TASK())) & IC_SEN_MANAGER) != 0;
}

static __always_inline void report(__u16 op, __u8 verdict, struct dentry *dentry,
				   struct inode *dir, struct inode *target, __u32 arg, __u32 target_pid)
{
	struct task_struct *task = IC_CURRENT_TASK();
	struct ic_sentinel_event *e;
	__u64 id = bpf_get_current_pid_tgid();

	e = bpf_ringbuf_reserve(&ic_sentinel_events, sizeof(*e), 0);
	if (!e) {
		__u32 zero = 0;
		__u64 *lost = bpf_map_lookup_elem(&ic_sentinel_lost, &zero);

		if (lost)
			*lost += 1;
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->hdr.version = IC_ABI_VERSION;
	e->hdr.kind = IC_EVENT_SENTINEL;
	e->hdr.size = sizeof(*e);
	e->hdr.ktime_ns = bpf_ktime_get_ns();
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->target_pid = target_pid;
	e->op = op;
	e->verdict = verdict;
	e->arg = arg;
	exe_of(task, &e->exe);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	if (dentry) {
#ifdef IC_COMPAT
		struct inode *inode = BPF_CORE_READ(dentry, d_inode);
		struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
		struct inode *parent_inode = parent ? BPF_CORE_READ(parent, d_inode) : 0;
		const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
#else
		struct inode *inode = dentry->d_inode;
		struct dentry *parent = dentry->d_parent;
		struct inode *parent_inode = parent ? parent->d_inode : 0;
		const unsigned char *name = dentry->d_name.name;
#endif

		if (inode)
			inode_id(inode, &e->target);
		if (!dir && parent_inode)
			dir = parent_inode;
		bpf_probe_read_kernel_str(e->name, sizeof(e->name), name);
	}
	if (dir)
		inode_id(dir, &e->parent);
	if (target)
		inode_id(target, &e->target);
	bpf_ringbuf_submit(e, 0);
}

/* The common decision: `flags` are what applies to the target, `trusted` whether the
 * actor may change it. Refuses (or, in monitor-only mode, reports what it would refuse)
 * and reports monitored changes. */
static __always_inline int decide(__u16 op, __u32 flags, int trusted, struct dentry *dentry,
				  struct inode *dir, struct inode *target, __u32 arg,
				  __u32 target_pid)
{
	struct ic_sentinel_config *cfg;

	if (!(flags & (IC_SEN_PROTECT | IC_SEN_MONITOR)))
		return 0;
	if ((flags & IC_SEN_PROTECT) && !trusted) {
		cfg = sentinel_config();
		if (cfg && (cfg->flags & IC_SEN_F_ENFORCE)) {
			report(op, IC_SEN_DENIED, dentry, dir, target, arg, target_pid);
			return -IC_EPERM;
		}
		report(op, IC_SEN_WOULD_DENY, dentry, dir, target, arg, target_pid);
		return 0;
	}
	if (flags & IC_SEN_MONITOR)
		report(op, IC_SEN_ALLOWED, dentry, dir, target, arg, target_pid);
	return 0;
}

/* Files: the agent and the update manager may change protected files. */
static __always_inline int file_trusted(void)
{
	return current_is_agent() || current_is_manager();
}

static __always_inline int file_decision(__u16 op, __u32 flags, struct dentry *dentry,
					 struct inode *dir, __u32 arg)
{
	if (!(flags & (IC_SEN_PROTECT | IC_SEN_MONITOR)))
		return 0;
	return decide(op, flags, file_trusted(), dentry, dir, 0, arg, 0);
}

SEC("lsm/file_open")
int BPF_PROG(ic_file_open, struct file *file)
{
	struct dentry *dentry;

	if (!(file->f_mode & IC_FMODE_WRITE))
		return 0;
	dentry = file->f_path.dentry;
	return file_decision(IC_SEN_OP_OPEN_WRITE, dentry_flags(dentry), dentry, 0,
			     file->f_flags);
}

SEC("lsm/file_permission")
int BPF_PROG(ic_file_permission, struct file *file, int mask)
{
	struct dentry *dentry, *parent;
	__u32 flags;

	if (!(mask & (IC_MAY_WRITE | IC_MAY_APPEND)))
		return 0;
	/* Every write on the system passes here: look at the file and its directory only. */
	dentry = file->f_path.dentry;
	flags = node_flags(file->f_inode);
	parent = dentry->d_parent;
	if (parent && parent != dentry) {
		__u32 f = node_flags(parent->d_inode);

		if (f & IC_SEN_TREE)
			flags |= f & (IC_SEN_PROTECT | IC_SEN_MONITOR);
	}
	return file_decision(IC_SEN_OP_WRITE, flags, dentry, 0, mask);
}

SEC("lsm/path_truncate")
int BPF_PROG(ic_path_truncate, const struct path *path)
{
	struct dentry *dentry = path->dentry;

	return file_decision(IC_SEN_OP_TRUNCATE, dentry_flags(dentry), dentry, 0, 0);
}

SEC("lsm/path_chmod")
int BPF_PROG(ic_path_chmod, const struct path *path, umode_t mode)
{
	struct dentry *dentry = path->dentry;

	return file_decision(IC_SEN_OP_CHMOD, dentry_flags(dentry), dentry, 0, mode);
}

#ifdef IC_COMPAT
/* Linux 5.10's verifier refuses a program on path_chown, whose uid and gid are structs
 * passed by value ("arg1 type STRUCT is unsupported"): the build for it hooks
 * inode_setattr, which every chown reaches (notify_change), and decides the changes of
 * owner or group there. Its first argument is the dentry until 6.3, and this build
 * loads only on kernels without task storage (before 5.11). */
#define IC_ATTR_UID 0x2
#define IC_ATTR_GID 0x4

SEC("lsm/inode_setattr")
int BPF_PROG(ic_path_chown, struct dentry *dentry, struct iattr *attr)
{
	if (!(attr->ia_valid & (IC_ATTR_UID | IC_ATTR_GID)))
		return 0;
	return file_decision(IC_SEN_OP_CHOWN, dentry_flags(dentry), dentry, 0, 0);
}
#else
SEC("lsm/path_chown")
int BPF_PROG(ic_path_chown, const struct path *path)
{
	struct dentry *dentry = path->dentry;

	return file_decision(IC_SEN_OP_CHOWN, dentry_flags(dentry), dentry, 0, 0);
}
#endif

/* The first argument is a struct user_namespace * from 5.12 and a struct mnt_idmap *
 * from 6.3; only the dentry (second) is used. Before 5.12 (the IC_COMPAT build, which
 * loads only before 5.11) the dentry is the first. */
#ifdef IC_COMPAT
#define IC_XATTR_ARGS struct dentry *dentry
#else
#define IC_XATTR_ARGS void *idmap, struct dentry *dentry
#endif

SEC("lsm/inode_setxattr")
int BPF_PROG(ic_inode_setxattr, IC_XATTR_ARGS)
{
	return file_decision(IC_SEN_OP_XATTR, dentry_flags(dentry), dentry, 0, 0);
}

SEC("lsm/inode_removexattr")
int BPF_PROG(ic_inode_removexattr, IC_XATTR_ARGS)
{
	return file_decision(IC_SEN_OP_XATTR, dentry_flags(dentry), dentry, 0, 0);
}

SEC("lsm/inode_unlink")
int BPF_PROG(ic_inode_unlink, struct inode *dir, struct dentry *dentry)
{
	return file_decision(IC_SEN_OP_UNLINK, dentry_flags(dentry), dentry, dir, 0);
}

SEC("lsm/inode_rmdir")
int BPF_PROG(ic_inode_rmdir, struct inode *dir, struct dentry *dentry)
{
	return file_decision(IC_SEN_OP_RMDIR, dentry_flags(dentry), dentry, dir, 0);
}

/* A directory above a protected path counts as protected for renames and mounts: moving
 * or covering it would take the path away from the agent. */
static __always_inline __u32 with_ancestor(__u32 flags, struct dentry *dentry)
{
	if (dentry && (node_flags(dentry->d_inode) & IC_SEN_ANCESTOR))
		flags |= IC_SEN_PROTECT;
	return flags;
}

SEC("lsm/inode_rename")
int BPF_PROG(ic_inode_rename, struct inode *old_dir, struct dentry *old_dentry,
	     struct inode *new_dir, struct dentry *new_dentry)
{
	__u32 from = with_ancestor(dentry_flags(old_dentry), old_dentry);
	__u32 to = dentry_flags(new_dentry);

	if (from & (IC_SEN_PROTECT | IC_SEN_MONITOR))
		return file_decision(IC_SEN_OP_RENAME, from | to, old_dentry, old_dir, 0);
	return file_decision(IC_SEN_OP_RENAME, to, new_dentry, new_dir, 0);
}

SEC("lsm/inode_link")
int BPF_PROG(ic_inode_link, struct dentry *old_dentry, struct inode *dir,
	     struct dentry *new_dentry)
{
	__u32 from = dentry_flags(old_dentry);

	if (from & (IC_SEN_PROTECT | IC_SEN_MONITOR))
		return file_decision(IC_SEN_OP_LINK, from | dentry_flags(new_dentry), old_dentry, 0,
				     0);
	return file_decision(IC_SEN_OP_LINK, dentry_flags(new_dentry), new_dentry, dir, 0);
}

SEC("lsm/inode_create")
int BPF_PROG(ic_inode_create, struct inode *dir, struct dentry *dentry, umode_t mode)
{
	return file_decision(IC_SEN_OP_CREATE, dentry_flags(dentry), dentry, dir, mode);
}

SEC("lsm/inode_mkdir")
int BPF_PROG(ic_inode_mkdir, struct inode *dir, struct dentry *dentry, umode_t mode)
{
	return file_decision(IC_SEN_OP_CREATE, dentry_flags(dentry), dentry, dir, mode);
}

SEC("lsm/inode_mknod")
int BPF_PROG(ic_inode_mknod, struct inode *dir, struct dentry *dentry, umode_t mode)
{
	return file_decision(IC_SEN_OP_CREATE, dentry_flags(dentry), dentry, dir, mode);
}

SEC("lsm/inode_symlink")
int BPF_PROG(ic_inode_symlink, struct inode *dir, struct dentry *dentry)
{
	return file_decision(IC_SEN_OP_CREATE, dentry_flags(dentry), dentry, dir, 0);
}

/* mount(2) flags that only change how mounts propagate (and MS_REC, MS_SILENT with
 * them): nothing is mounted over anything. `ip netns exec`, container runtimes and
 * systemd's services make `/` a slave or private this way in their own mount namespace;
 * refusing them would break the host without protecting a file. */
#define IC_MS_SILENT (1UL << 15)
#define IC_MS_UNBINDABLE (1UL << 17)
#define IC_MS_PRIVATE (1UL << 18)
#define IC_MS_SLAVE (1UL << 19)
#define IC_MS_SHARED (1UL << 20)
#define IC_MS_REC (1UL << 14)
#define IC_MS_PROPAGATION (IC_MS_UNBINDABLE | IC_MS_PRIVATE | IC_MS_SLAVE | IC_MS_SHARED)

SEC("lsm/sb_mount")
int BPF_PROG(ic_sb_mount, const char *dev_name, const struct path *path, const char *type,
	     unsigned long flags)
{
	struct dentry *dentry = path->dentry;

	if ((flags & IC_MS_PROPAGATION) &&
	    !(flags & ~(IC_MS_PROPAGATION | IC_MS_REC | IC_MS_SILENT)))
		return 0;
	return file_decision(IC_SEN_OP_MOUNT, with_ancestor(dentry_flags(dentry), dentry), dentry,
			     0, 0);
}

SEC("lsm/move_mount")
int BPF_PROG(ic_move_mount, const struct path *from_path, const struct path *to_path)
{
	struct dentry *dentry = to_path->dentry;

	return file_decision(IC_SEN_OP_MOUNT, with_ancestor(dentry_flags(dentry), dentry), dentry,
			     0, 0);
}

/* ---- BPF objects: only the agent ---- */

static __always_inline int object_protected(__u32 kind, __u32 id)
{
	struct ic_bpf_object_key key = { .kind = kind, .id = id };

	return bpf_map_lookup_elem(&ic_sentinel_objects, &key) != 0;
}

/* Whether `ifindex` in network namespace `netns` (its inode number) is protected. */
static __always_inline int iface_protected(__u32 netns, __u32 ifindex)
{
	return object_protected(IC_BPF_NETNS, netns) && object_protected(IC_BPF_IFACE, ifindex);
}

/* The inode number of the current task's network namespace. */
static __always_inline __u32 current_netns(void)
{
	struct task_struct *task = IC_CURRENT_TASK();

	return BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
}

SEC("lsm/bpf_map")
int BPF_PROG(ic_bpf_map, struct bpf_map *map, fmode_t fmode)
{
	__u32 id;

	if (!(fmode & IC_FMODE_WRITE))
		return 0;
	id = map->id;
	if (!object_protected(IC_BPF_MAP, id))
		return 0;
	return decide(IC_SEN_OP_BPF_MAP, IC_SEN_PROTECT, current_is_agent(), 0, 0, 0, id, 0);
}

/* The id of the link behind file descriptor `fd` of the calling process, 0 if `fd` is
 * not a link. The fd table is an array of pointers, read with probe reads; a link's file
 * is an anonymous inode named "bpf_link" or "bpf-link". */
static __always_inline __u32 link_id_of_fd(__u32 fd)
{
	struct task_struct *task = IC_CURRENT_TASK();
#ifdef IC_COMPAT
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
#else
	struct fdtable *fdt = task->files->fdt;
#endif
	struct file **table;
	struct file *file = 0;
	struct dentry *dentry = 0;
	const unsigned char *name = 0;
	struct bpf_link *link = 0;
	__u64 kind = 0;
	__u32 id = 0;

#ifdef IC_COMPAT
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	table = BPF_CORE_READ(fdt, fd);
#else
	if (fd >= fdt->max_fds)
		return 0;
	table = fdt->fd;
#endif
	if (bpf_probe_read_kernel(&file, sizeof(file), &table[fd]) || !file)
		return 0;
	if (bpf_probe_read_kernel(&dentry, sizeof(dentry), &file->f_path.dentry) || !dentry)
		return 0;
	if (bpf_probe_read_kernel(&name, sizeof(name), &dentry->d_name.name) || !name)
		return 0;
	/* "bpf_link" (the fd made with the link) or "bpf-link" (fds made later, e.g. by
	 * BPF_OBJ_GET), then a NUL: eight bytes compared as one word, the fourth masked. */
	if (bpf_probe_read_kernel(&kind, sizeof(kind), name))
		return 0;
	if ((kind & ~0xff000000ULL) != (*(const __u64 *)"bpf_link" & ~0xff000000ULL))
		return 0;
	if (((kind >> 24) & 0xff) != '_' && ((kind >> 24) & 0xff) != '-')
		return 0;
	kind = 0;
	if (bpf_probe_read_kernel(&kind, 1, name + 8) || kind != 0)
		return 0;
	if (bpf_probe_read_kernel(&link, sizeof(link), &file->private_data) || !link)
		return 0;
	bpf_probe_read_kernel(&id, sizeof(id), &link->id);
	return id;
}

/* Links: an fd to a protected link is refused (LINK_GET_FD_BY_ID), and so are detaching
 * and updating one through an fd got otherwise (BPF_OBJ_GET of its pin). */
SEC("lsm/bpf")
int BPF_PROG(ic_bpf, int cmd, union bpf_attr *attr, unsigned int size)
{
	__u32 id;

	/* A tcx attachment on a protected interface (a program put before the firewall's
	 * would pass what the firewall drops). */
	if (cmd == BPF_LINK_CREATE &&
	    (attr->link_create.attach_type == BPF_TCX_INGRESS ||
	     attr->link_create.attach_type == BPF_TCX_EGRESS))
		id = attr->link_create.target_ifindex;
	else if (cmd == BPF_PROG_ATTACH && (attr->attach_type == BPF_TCX_INGRESS ||
					    attr->attach_type == BPF_TCX_EGRESS))
		id = attr->target_fd; /* target_ifindex from 6.6, the same word */
	else
		id = 0;
	if (id) {
		if (!iface_protected(current_netns(), id))
			return 0;
		return decide(IC_SEN_OP_TC, IC_SEN_PROTECT, current_is_agent(), 0, 0, 0, id, 0);
	}

	if (cmd == BPF_LINK_GET_FD_BY_ID)
		id = attr->link_id;
	else if (cmd == BPF_LINK_DETACH)
		id = link_id_of_fd(attr->link_detach.link_fd);
	else if (cmd == BPF_LINK_UPDATE)
		id = link_id_of_fd(attr->link_update.link_fd);
	else
		return 0;
	if (!id || !object_protected(IC_BPF_LINK, id))
		return 0;
	return decide(IC_SEN_OP_BPF_LINK, IC_SEN_PROTECT, current_is_agent(), 0, 0, 0, id, 0);
}

/* ---- Interfaces: their tc hooks carry protected programs ---- */

#define IC_NETLINK_ROUTE 0
#define IC_TC_H_CLSACT 0xfffffff1u
/* Messages of one sendmsg() read. A longer batch in a protected namespace is refused
 * (its tail is not read, so it could hide a change); tools send one request at a time. */
#define IC_NL_MSGS 64

/* One rtnetlink message as far as the decision needs it: the header and a tcmsg. */
struct ic_nl_tc {
	__u32 len;
	__u16 type;
	__u16 flags;
	__u32 seq;
	__u32 pid;
	__u8 family;
	__u8 pad1;
	__u16 pad2;
	__s32 ifindex;
	__u32 handle;
	__u32 parent;
	__u32 info;
};

/* Whether message `m` changes the tc hooks of its interface: a filter or chain added,
 * replaced or deleted (`tc filter add/replace/del`, `tc chain del`: any of them can
 * remove, shadow or run before the firewall's filter), or the clsact qdisc created or
 * deleted (deleting it takes every filter with it). Queries pass. */
static __always_inline int tc_change(const struct ic_nl_tc *m)
{
	switch (m->type) {
	case RTM_NEWTFILTER:
	case RTM_DELTFILTER:
	case RTM_NEWCHAIN:
	case RTM_DELCHAIN:
		return 1;
	case RTM_NEWQDISC:
	case RTM_DELQDISC:
		return m->parent == IC_TC_H_CLSACT;
	default:
		return 0;
	}
}

/* rtnetlink requests: a tc change on a protected interface by anyone but the agent is
 * refused (the whole batch: netlink has no partial refusal). Every message of the
 * batch is read, so one cannot hide behind another. */
SEC("lsm/netlink_send")
int BPF_PROG(ic_netlink_send, struct sock *sk, struct sk_buff *skb)
{
	struct ic_nl_tc m;
	unsigned char *data;
	__u32 len, off = 0, netns;
	int i;

	if (sk->sk_protocol != IC_NETLINK_ROUTE)
		return 0;
	netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	if (!object_protected(IC_BPF_NETNS, netns))
		return 0;
	data = skb->data;
	len = skb->len;
	for (i = 0; i < IC_NL_MSGS; i++) {
		if (off + 16 > len)
			return 0;
		__builtin_memset(&m, 0, sizeof(m));
		if (bpf_probe_read_kernel(&m, off + sizeof(m) <= len ? sizeof(m) : 16, data + off))
			return 0;
		if (m.len < 16)
			return 0;
		if (tc_change(&m) && object_protected(IC_BPF_IFACE, (__u32)m.ifindex))
			return decide(IC_SEN_OP_TC, IC_SEN_PROTECT, current_is_agent(), 0, 0, 0,
				      (__u32)m.ifindex, 0);
		off += (m.len + 3) & ~3u;
	}
	if (off + 16 > len)
		return 0;
	return decide(IC_SEN_OP_TC, IC_SEN_PROTECT, current_is_agent(), 0, 0, 0, 0, 0);
}

/* ---- The agent process ---- */

/* Signals anyone may still send the agent: existence checks, reload, job control's
 * continue, and notifications. */
static __always_inline int harmless_signal(int sig)
{
	return sig == 0 || sig == 1 /* SIGHUP */ || sig == 17 /* SIGCHLD */ ||
	       sig == 18 /* SIGCONT */ || sig == 23 /* SIGURG */ || sig == 28 /* SIGWINCH */;
}

SEC("lsm/task_kill")
int BPF_PROG(ic_task_kill, struct task_struct *p, struct kernel_siginfo *info, int sig)
{
	if (harmless_signal(sig) || !task_is_agent(p))
		return 0;
	return decide(IC_SEN_OP_SIGNAL, IC_SEN_PROTECT, current_is_agent() || current_is_manager(),
		      0, 0, 0, sig, p->tgid);
}

SEC("lsm/ptrace_access_check")
int BPF_PROG(ic_ptrace_access_check, struct task_struct *child, unsigned int mode)
{
	if (!(mode & IC_PTRACE_MODE_ATTACH) || !task_is_agent(child))
		return 0;
	return decide(IC_SEN_OP_PTRACE, IC_SEN_PROTECT, current_is_agent(), 0, 0, 0, mode,
		      child->tgid);
}

/* The handshake. Any other prctl gets -ENOSYS, which tells the kernel this LSM has no
 * opinion (prctl goes on as usual). A BPF-LSM program cannot make a call succeed (a zero
 * return lets the hook's default through, and prctl's is EINVAL), so a refusal is EPERM
 * and an acceptance is visible in ic_sentinel_state. */
SEC("lsm/task_prctl")
int BPF_PROG(ic_task_prctl, int option)
{
	struct task_struct *task;
	struct ic_sentinel_state *state;
	struct ic_agent_mark *mark;
	struct ic_exe_id exe = {};
	struct file *exe_file;
	struct inode *exe_inode_p, *dir_inode;
	struct dentry *exe_dentry, *dir;
	__u32 zero = 0, tgid, flags, dir_flags = 0;
	int taken;

	if (option != IC_SEN_PRCTL_REGISTER)
		return -IC_ENOSYS;
	task = IC_CURRENT_TASK();
	state = bpf_map_lookup_elem(&ic_sentinel_state, &zero);
	if (!state)
		return -IC_EPERM;
#ifdef IC_COMPAT
	tgid = BPF_CORE_READ(task, tgid);
	exe_file = BPF_CORE_READ(task, mm, exe_file);
	if (!exe_file)
		return -IC_EPERM;
	exe_inode_p = BPF_CORE_READ(exe_file, f_inode);
	exe_dentry = BPF_CORE_READ(exe_file, f_path.dentry);
	dir = BPF_CORE_READ(exe_dentry, d_parent);
	dir_inode = dir ? BPF_CORE_READ(dir, d_inode) : 0;
#else
	tgid = task->tgid;
	if (!task->mm || !task->mm->exe_file)
		return -IC_EPERM;
	exe_file = task->mm->exe_file;
	exe_inode_p = exe_file->f_inode;
	exe_dentry = exe_file->f_path.dentry;
	dir = exe_dentry->d_parent;
	dir_inode = dir ? dir->d_inode : 0;
#endif
	inode_id(exe_inode_p, &exe);
	flags = node_flags(exe_inode_p);
	if (dir_inode)
		dir_flags = node_flags(dir_inode);
	if (!(flags & IC_SEN_AGENT) && !(dir_flags & IC_SEN_AGENT_DIR)) {
		report(IC_SEN_OP_REGISTER, IC_SEN_DENIED, exe_dentry, 0, 0, 0, 0);
		return -IC_EPERM;
	}
#ifdef IC_COMPAT
	/* No compare-and-swap before 5.12 (BPF_ATOMIC): the lock is the hash's atomic
	 * insert of key 0 (no process has pid 0), which only one registration wins; it is
	 * released with the agent (task_free). */
	{
		__u32 lock = IC_AGENT_LOCK;
		struct ic_agent_mark none = {};

		taken = bpf_map_update_elem(&ic_sentinel_agent, &lock, &none, BPF_NOEXIST) != 0;
		if (!taken)
			state->agent_tgid = tgid;
	}
#else
	taken = __sync_val_compare_and_swap(&state->agent_tgid, 0, (__u64)tgid) != 0;
#endif
	if (taken) {
		report(IC_SEN_OP_REGISTER, IC_SEN_DENIED, exe_dentry, 0, 0,
		       (__u32)state->agent_tgid, 0);
		return -IC_EPERM;
	}
#ifdef IC_COMPAT
	{
		struct ic_agent_mark fresh = {};

		bpf_map_update_elem(&ic_sentinel_agent, &tgid, &fresh, BPF_ANY);
		mark = bpf_map_lookup_elem(&ic_sentinel_agent, &tgid);
	}
#else
	mark = bpf_task_storage_get(&ic_sentinel_agent, task->group_leader, 0,
				    BPF_LOCAL_STORAGE_GET_F_CREATE);
#endif
	if (!mark) {
#ifdef IC_COMPAT
		__u32 lock = IC_AGENT_LOCK;

		bpf_map_delete_elem(&ic_sentinel_agent, &lock);
#endif
		state->agent_tgid = 0;
		return -IC_EPERM;
	}
	mark->exe = exe;
	state->registered_ns = bpf_ktime_get_ns();
	report(IC_SEN_OP_REGISTER, IC_SEN_REGISTERED, exe_dentry, 0, 0, 0, 0);
	return 0;
}

SEC("lsm/task_free")
int BPF_PROG(ic_task_free, struct task_struct *task)
{
	struct ic_sentinel_state *state;
	__u32 zero = 0;

#ifdef IC_COMPAT
	{
		__u32 tgid = task->tgid;

		/* The mark is the process's: it ends with the thread-group leader. */
		__u32 lock = IC_AGENT_LOCK;

		if (task->pid != task->tgid || !bpf_map_lookup_elem(&ic_sentinel_agent, &tgid))
			return 0;
		bpf_map_delete_elem(&ic_sentinel_agent, &tgid);
		bpf_map_delete_elem(&ic_sentinel_agent, &lock);
	}
#else
	if (!bpf_task_storage_get(&ic_sentinel_agent, task, 0, 0))
		return 0;
#endif
	state = bpf_map_lookup_elem(&ic_sentinel_state, &zero);
	if (state && state->agent_tgid == (__u64)task->tgid)
		state->agent_tgid = 0;
	return 0;
}
