"""Checks examples/deploy/Dockerfile as a builder would read it, and prints the image's
command line (ENTRYPOINT then CMD, one argument per line) for dev.sh to run in an
image-like root.

    python3 dockerfile.py examples/deploy/Dockerfile

What it requires: a multi-stage build whose first stage builds the binary with
examples/deploy/build-static.sh (the script the test suite checks the binary of), and a
last stage FROM scratch that copies that one file from the build stage and runs it in
exec form. Each failure names the Dockerfile's line.
"""

import json
import sys

from dockerfile_parse import DockerfileParser

BUILD_SCRIPT = "examples/deploy/build-static.sh"
BINARY = "/usr/local/bin/full_firewall"


def fail(path, line, message):
    sys.exit(f"{path}:{line}: {message}")


def main():
    path = sys.argv[1]
    with open(path, "rb") as dockerfile:
        instructions = DockerfileParser(fileobj=dockerfile).structure
    stages = [i for i in instructions if i["instruction"] == "FROM"]
    if len(stages) < 2:
        fail(path, 1, f"one build stage and a runtime stage expected, found {len(stages)} FROM")
    build, final = stages[0], stages[-1]
    build_words = build["value"].split()
    if len(build_words) != 3 or build_words[1].upper() != "AS":
        fail(path, build["startline"] + 1, "the build stage must be named (FROM image AS name)")
    build_name = build_words[2]
    if final["value"].strip() != "scratch":
        fail(path, final["startline"] + 1, f"the runtime stage must be FROM scratch, not {final['value']!r}")

    def in_stage(stage):
        after = [i for i in instructions if i["startline"] > stage["startline"]]
        following = [s for s in stages if s["startline"] > stage["startline"]]
        end = following[0]["startline"] if following else float("inf")
        return [i for i in after if i["startline"] < end]

    runs = [i for i in in_stage(build) if i["instruction"] == "RUN"]
    built = [r for r in runs if BUILD_SCRIPT in r["value"]]
    if not built:
        fail(path, build["startline"] + 1, f"the build stage never runs {BUILD_SCRIPT}")
    output = built[-1]["value"].split(BUILD_SCRIPT, 1)[1].split()
    if len(output) != 1:
        fail(path, built[-1]["startline"] + 1, f"{BUILD_SCRIPT} must be given the one output path")
    output = output[0]

    final_body = in_stage(final)
    copies = [i for i in final_body if i["instruction"] == "COPY"]
    if len(copies) != 1:
        fail(path, final["startline"] + 1, f"the runtime stage must copy one file, found {len(copies)} COPY")
    copy = copies[0]["value"].split()
    if copy != [f"--from={build_name}", output, BINARY]:
        fail(path, copies[0]["startline"] + 1,
             f"expected COPY --from={build_name} {output} {BINARY}, found COPY {' '.join(copy)}")
    others = [i for i in final_body if i["instruction"] not in ("COPY", "ENTRYPOINT", "CMD", "COMMENT", "LABEL")]
    if others:
        fail(path, others[0]["startline"] + 1, f"nothing but the binary belongs in the image ({others[0]['instruction']})")

    def exec_form(name):
        found = [i for i in final_body if i["instruction"] == name]
        if len(found) != 1:
            fail(path, final["startline"] + 1, f"the runtime stage needs one {name}, found {len(found)}")
        try:
            value = json.loads(found[0]["value"])
        except ValueError:
            value = None
        if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
            fail(path, found[0]["startline"] + 1, f"{name} must be in exec form (a JSON list): a scratch image has no shell")
        return value

    entrypoint = exec_form("ENTRYPOINT")
    if entrypoint != [BINARY]:
        fail(path, final["startline"] + 1, f"ENTRYPOINT must be [\"{BINARY}\"], found {entrypoint}")
    for arg in entrypoint + exec_form("CMD"):
        print(arg)


if __name__ == "__main__":
    main()
