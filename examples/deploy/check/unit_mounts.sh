#!/usr/bin/env bash
# Runs a command in a mount namespace shaped as ironclad.service shapes the daemon's:
#   ProtectKernelTunables=yes  /sys and /proc/sys read-only (every /sys mount)
#   ReadWritePaths=/sys/fs/bpf the pin root writable again
#   ProtectControlGroups=yes   /sys/fs/cgroup read-only (part of the /sys remount)
#   PrivateDevices=yes         a fresh /dev with the pseudo devices only
#   PrivateTmp=yes             a fresh /tmp is left out: the check's files live there
# systemd builds the same namespace; this lets the test suite run the daemon in it on
# machines where systemd is not PID 1. Usage: unit_mounts.sh COMMAND [ARG...]
set -euo pipefail
if [[ "${IC_UNIT_MOUNTS_INSIDE:-}" != 1 ]]; then
    exec env IC_UNIT_MOUNTS_INSIDE=1 unshare --mount --propagation private "$0" "$@"
fi
unset IC_UNIT_MOUNTS_INSIDE
# Read-only, submounts included (findmnt lists them; bpffs and cgroup2 among them).
while read -r target; do
    mount -o remount,bind,ro "$target"
done < <(findmnt -R -n -l -o TARGET /sys)
mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys
mount -o remount,bind,rw /sys/fs/bpf
dev=$(mktemp -d)
mount -t tmpfs -o mode=755,nosuid tmpfs "$dev"
for d in null zero full random urandom tty; do
    touch "$dev/$d"
    mount --bind "/dev/$d" "$dev/$d"
done
ln -s /proc/self/fd "$dev/fd"
mount --move "$dev" /dev
exec "$@"
