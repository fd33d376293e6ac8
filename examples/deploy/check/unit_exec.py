#!/usr/bin/python3
"""Prints a systemd unit's command line as systemd would run it, one argument per line.

    unit_exec.py UNIT KEY      (KEY: ExecStart or ExecStartPre)

The unit's `Environment=` assignments are read first, then each `EnvironmentFile=`
(`-` before the path: a missing file is no error), later values winning, as systemd
does; in the command, `${VAR}` is replaced by the value as part of its word, and a word
that is only `$VAR` becomes the value's whitespace-separated words (none when empty).
Lines continued with a trailing backslash are joined. Only what the shipped unit uses
is understood: no quoting inside the command, no specifiers (`%i`), no `-`/`@`/`+`
prefixes; anything else is refused rather than guessed.

This lets the test suite start the daemon from an installed package's unit on machines
where systemd is not PID 1.
"""
import re
import shlex
import sys


def logical_lines(path: str) -> list[str]:
    lines, current = [], ""
    for raw in open(path, encoding="utf-8"):
        line = raw.rstrip("\n")
        if not current and line.lstrip().startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    return lines


def env_file(path: str, env: dict[str, str]) -> None:
    for raw in open(path, encoding="utf-8"):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, _, value = line.partition("=")
        words = shlex.split(value) if value.strip() else [""]
        env[key.strip()] = " ".join(words)


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    unit, key = sys.argv[1], sys.argv[2]
    env: dict[str, str] = {}
    command = None
    for line in logical_lines(unit):
        name, sep, value = line.partition("=")
        if not sep:
            continue
        name = name.strip()
        if name == "Environment":
            for assignment in shlex.split(value):
                k, _, v = assignment.partition("=")
                env[k] = v
        elif name == "EnvironmentFile":
            path = value.strip()
            optional = path.startswith("-")
            try:
                env_file(path.lstrip("-"), env)
            except FileNotFoundError:
                if not optional:
                    sys.exit(f"{unit}: EnvironmentFile {path} does not exist")
        elif name == key:
            if command is not None:
                sys.exit(f"{unit}: more than one {key}= line")
            command = value.strip()
    if command is None:
        sys.exit(f"{unit}: no {key}= line")
    if command[0] in "-@+!:" or "%" in command or '"' in command or "'" in command:
        sys.exit(f"{unit}: {key}= uses syntax this reader does not understand: {command}")
    args: list[str] = []
    for word in command.split():
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            args.extend(env.get(whole.group(1), "").split())
            continue
        args.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    print("\n".join(args))


if __name__ == "__main__":
    main()
