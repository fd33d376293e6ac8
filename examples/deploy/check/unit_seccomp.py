#!/usr/bin/python3
"""Runs a command under the system-call filter a systemd unit declares.

    unit_seccomp.py UNIT COMMAND [ARG...]

The unit's `SystemCallFilter=` lines are read in order as systemd reads them (the first
line decides: an allow list here; `~` lines remove from it, others add), each `@group`
expanded by `systemd-analyze syscall-filter`. Every other system call kills the process
(SIGSYS), stricter than the unit's own `SystemCallErrorNumber=EPERM`: a call the daemon
makes outside the list fails the check instead of degrading it quietly.

This lets the test suite run the daemon as shipped under the unit's filter on machines
where systemd is not PID 1. It needs Debian's python3-seccomp (libseccomp's bindings),
hence /usr/bin/python3.
"""
import os
import subprocess
import sys

import seccomp


def expand(token: str) -> set[str]:
    if not token.startswith("@"):
        return {token}
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", "--no-pager", token],
        capture_output=True, text=True, check=True,
    ).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        names |= expand(line)
    return names


def allowed(unit: str) -> set[str]:
    lines = [
        line.split("=", 1)[1].strip()
        for line in open(unit, encoding="utf-8")
        if line.startswith("SystemCallFilter=")
    ]
    if not lines or lines[0].startswith("~"):
        sys.exit(f"{unit}: the first SystemCallFilter= line must be an allow list")
    allow: set[str] = set()
    for value in lines:
        deny = value.startswith("~")
        tokens = value.lstrip("~").split()
        names = set().union(*(expand(t) for t in tokens))
        allow = allow - names if deny else allow | names
    return allow


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    unit, command = sys.argv[1], sys.argv[2:]
    names = allowed(unit)
    f = seccomp.SyscallFilter(defaction=seccomp.KILL_PROCESS)
    known = 0
    for name in sorted(names):
        try:
            f.add_rule(seccomp.ALLOW, name)
            known += 1
        except (RuntimeError, ValueError):
            pass  # not a system call of this architecture
    print(f"unit_seccomp: {known} system calls allowed, every other one kills", file=sys.stderr)
    f.load()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
