# Shared by guest/run.sh and guest/arm64.sh (sourced; each defines `log`).

# `install_guest_tools PACKAGE...`: the Debian packages that are missing (one apt run),
# then virtme-ng from PyPI if `vng` is not found, its scripts' directory put on PATH.
install_guest_tools() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if ! command -v vng >/dev/null; then
        log "installing virtme-ng"
        python3 -m pip install --quiet --root-user-action=ignore "virtme-ng==1.42"
        hash -r
    fi
    if ! command -v vng >/dev/null; then
        # pip put it next to the interpreter's other scripts, which may not be on PATH.
        PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
        export PATH
    fi
    command -v vng >/dev/null || { echo "vng not found after installing virtme-ng" >&2; exit 1; }
}

# Path of the executable cargo built for a target of the kind given ("test", "bench"),
# from its JSON messages.
executable() {
    python3 -c '
import json, sys
name, kind = sys.argv[1], sys.argv[2]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    target = m.get("target", {})
    if m.get("reason") == "compiler-artifact" and target.get("name") == name \
            and kind in target.get("kind", []) and m.get("executable"):
        print(m["executable"])
' "$1" "$2"
}
