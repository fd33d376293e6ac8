/* SPDX-License-Identifier: MIT OR GPL-2.0-only */
/*
 * proc.h - reading a process's executable identity from BTF-typed pointers.
 *
 * Only BTF-typed programs (tp_btf, LSM, iter) may follow these pointers directly on a
 * kernel in lockdown (bpf_probe_read_kernel is refused there).
 */
#ifndef IRONCLAD_PROC_H
#define IRONCLAD_PROC_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include "ironclad.h"

/* Kernels before 6.6 kept the change time as a timespec64 named i_ctime. */
struct inode___pre66 {
	struct timespec64 i_ctime;
} __attribute__((preserve_access_index));

/* Kernels 6.6 to 6.10 named it __i_ctime. */
struct inode___pre611 {
	struct timespec64 __i_ctime;
} __attribute__((preserve_access_index));

static __always_inline void ic_exe_of_file(struct file *file, struct ic_proc_exe *out)
{
	struct inode *inode = file->f_inode;

	out->dev = inode->i_sb->s_dev;
	out->ino = inode->i_ino;
	if (bpf_core_field_exists(inode->i_ctime_sec)) {
		out->ctime_sec = inode->i_ctime_sec;
		out->ctime_nsec = inode->i_ctime_nsec;
	} else if (bpf_core_field_exists(((struct inode___pre611 *)inode)->__i_ctime)) {
		struct inode___pre611 *old = (void *)inode;

		out->ctime_sec = old->__i_ctime.tv_sec;
		out->ctime_nsec = old->__i_ctime.tv_nsec;
	} else {
		struct inode___pre66 *old = (void *)inode;

		out->ctime_sec = old->i_ctime.tv_sec;
		out->ctime_nsec = old->i_ctime.tv_nsec;
	}
}

#endif /* IRONCLAD_PROC_H */
