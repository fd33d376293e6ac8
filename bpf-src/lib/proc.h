/* SPDX-License-Identifier: MIT OR GPL-2.0-only */
/*
 * proc.h - reading a process's executable identity from BTF-typed pointers: device,
 * inode and modification time of the file it executed (a rename keeps all three; a
 * rewrite in place changes the modification time; a replacement is a new inode).
 *
 * Only BTF-typed programs (tp_btf, LSM, iter) may follow these pointers directly on a
 * kernel in lockdown (bpf_probe_read_kernel is refused there).
 */
#ifndef IRONCLAD_PROC_H
#define IRONCLAD_PROC_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include "ironclad.h"

/* Kernels before 6.7 kept the modification time as a timespec64 named i_mtime. */
struct inode___pre67 {
	struct timespec64 i_mtime;
} __attribute__((preserve_access_index));

/* Kernels 6.7 to 6.10 named it __i_mtime. */
struct inode___pre611 {
	struct timespec64 __i_mtime;
} __attribute__((preserve_access_index));

static __always_inline void ic_exe_of_file(struct file *file, struct ic_proc_exe *out)
{
	struct inode *inode = file->f_inode;

	out->dev = inode->i_sb->s_dev;
	out->ino = inode->i_ino;
	if (bpf_core_field_exists(inode->i_mtime_sec)) {
		out->mtime_sec = inode->i_mtime_sec;
		out->mtime_nsec = inode->i_mtime_nsec;
	} else if (bpf_core_field_exists(((struct inode___pre611 *)inode)->__i_mtime)) {
		struct inode___pre611 *old = (void *)inode;

		out->mtime_sec = old->__i_mtime.tv_sec;
		out->mtime_nsec = old->__i_mtime.tv_nsec;
	} else {
		struct inode___pre67 *old = (void *)inode;

		out->mtime_sec = old->i_mtime.tv_sec;
		out->mtime_nsec = old->i_mtime.tv_nsec;
	}
}

#endif /* IRONCLAD_PROC_H */
