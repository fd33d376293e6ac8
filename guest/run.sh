#!/usr/bin/env bash
# Runs the tests that need a kernel this machine cannot offer (BPF-LSM) inside QEMU
# guests booting the kernels listed in guest/kernels, and reports their results here.
#
#   guest/run.sh            install what is missing, build, run every kernel's tests
#   guest/run.sh --bench    only the Sentinel benchmark, in a boot of the first kernel of
#                           its own (docs/performance.md quotes that kernel's figures;
#                           nothing else runs in that guest)
#   guest/run.sh --prepare  only install what is missing and fetch the kernels (apt), so
#                           a later run in the background takes no package lock
#   GUEST_FILTER=NAME guest/run.sh   only the tests whose name contains NAME
#   GUEST_KERNEL=NAME guest/run.sh   only the kernel of guest/kernels named NAME
#   GUEST_SKIP=NAME guest/run.sh     every kernel but the one named NAME (./dev.sh test
#                                    runs 5.10 in a lane of its own)
#   GUEST_CPUS=N guest/run.sh        N vCPUs instead of one (see the boot below)
#
# The guest (virtme-ng, TCG: KVM guests hang on these machines) shares the host's root
# file system read-only, so the test binaries built here run there unchanged; results
# come back through a writable directory under target/guest/. Each kernel's output ends
# with libtest's `test result:` line, which ./dev.sh test counts with the host's.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/target/guest
# The unpacked kernel packages: outside the checkout, so that a fresh clone on a machine
# that has run the tests before finds them (a package's name carries its version: a
# newer build is fetched beside the old one).
KERNELS=${IRONCLAD_GUEST_KERNELS:-/var/cache/ironclad/guest-kernels}
BENCH=0 PREPARE=0
[[ "${1:-}" == --bench ]] && BENCH=1
[[ "${1:-}" == --prepare ]] && PREPARE=1

# With the seconds since the script started, so a slow step shows in a CI log.
log() { printf '\033[1m==> guest [%ds]: %s\033[0m\n' "$SECONDS" "$*" >&2; }

# shellcheck source=guest/common.sh
source "$ROOT/guest/common.sh"

install_tools() {
    install_guest_tools qemu-system-x86 kmod busybox-static cpio attr gdb bpftool util-linux xz-utils curl
}

# The newest package of Debian suite $1 (another release than this machine's, e.g.
# bullseye-security) whose name matches the extended regex $2, as "NAME URL": read from
# that suite's index on deb.debian.org (kept a day under $KERNELS/), without adding the
# suite to apt's sources (where its packages could replace this machine's).
suite_package() {
    local suite=$1 regex=$2 archive=debian index
    [[ "$suite" == *-security ]] && archive=debian-security
    index=$KERNELS/Packages-$suite
    mkdir -p "$KERNELS"
    if [[ ! -s "$index" || -n "$(find "$index" -mmin +1440)" ]]; then
        curl -fsS --retry 3 -m 300 "http://deb.debian.org/$archive/dists/$suite/main/binary-amd64/Packages.xz" \
            | xz -d > "$index.new" && mv "$index.new" "$index"
    fi
    awk -v re="$regex" '
        /^Package: / { p = $2 }
        /^Filename: / && p ~ re { print p, $2 }
        /^$/ { p = "" }' "$index" | sort -V | tail -n 1 \
        | awk -v base="http://deb.debian.org/$archive/" '{ print $1, base $2 }'
}

# Prints the version string (e.g. 6.1.0-54-amd64) of the kernel package matching $1,
# downloaded and unpacked under $KERNELS/, its modules installed for virtme-ng. $1 is a
# package name with '*' for the build number, from this machine's apt sources, or
# SUITE:PATTERN for a package of another Debian suite (suite_package).
fetch_kernel() {
    local pattern=$1 pkg ver dir url=
    if [[ "$pattern" == *:* ]]; then
        # '*' is a build number and '.' any character, as for apt's search below.
        read -r pkg url < <(suite_package "${pattern%%:*}" "^$(sed 's/\*/[0-9]+/g' <<<"${pattern#*:}")\$")
    else
        pkg=$(apt-cache search --names-only "^${pattern//\*/[0-9]+}\$" | awk '{print $1}' | sort -V | tail -n 1)
        if [[ -z "$pkg" ]]; then
            apt-get update -qq
            pkg=$(apt-cache search --names-only "^${pattern//\*/[0-9]+}\$" | awk '{print $1}' | sort -V | tail -n 1)
        fi
    fi
    [[ -n "$pkg" ]] || { echo "no Debian package matches $pattern" >&2; return 1; }
    dir=$KERNELS/$pkg
    if [[ ! -d "$dir/boot" ]]; then
        log "fetching $pkg"
        mkdir -p "$dir"
        if [[ -n "$url" ]]; then
            (cd "$dir" && curl -fsS --retry 3 -m 600 -o kernel.deb "$url" && dpkg -x kernel.deb . && rm -f kernel.deb)
        else
            (cd "$dir" && apt-get download -qq "$pkg" 2>/dev/null && dpkg -x ./*.deb . && rm -f ./*.deb)
        fi
    fi
    ver=$(ls "$dir/lib/modules")
    if [[ ! -d /lib/modules/$ver ]]; then
        mkdir -p /lib/modules
        cp -a "$dir/lib/modules/$ver" /lib/modules/
        depmod "$ver"
    fi
    # virtme-ng links the guest's /lib/modules/VER to the modules beside the image it
    # boots, and the guest sees /var only through an overlay in which that link leads
    # nowhere (`modprobe veth`: not found, so no veth, dummy or VLAN device in the
    # guest). The image is booted from a copy under target/ (hard links where the file
    # system allows), with its modules' index.
    local boot=$WORK/kernels/$pkg
    if [[ ! -d "$boot/boot" ]]; then
        mkdir -p "$WORK/kernels"
        rm -rf "$boot"
        cp -al "$dir" "$boot" 2>/dev/null || cp -a "$dir" "$boot"
        depmod -b "$boot" "$ver"
    fi
    echo "$ver $boot/boot/vmlinuz-$ver"
}

install_tools
if ((PREPARE)); then
    while read -r name pattern _ <&3; do
        [[ -z "$name" || "$name" == \#* ]] && continue
        fetch_kernel "$pattern" >/dev/null
    done 3< guest/kernels
    exit 0
fi
if ((BENCH)); then
    log "building the guest benchmark"
    # As ./dev.sh builds the benchmarks: IRONCLAD_BENCH_CARGO (the test suite's short mode
    # builds them in the test profile), else the bench profile.
    # shellcheck disable=SC2086 # IRONCLAD_BENCH_CARGO is words
    BENCHES=$(cargo bench --quiet ${IRONCLAD_BENCH_CARGO:--p ironclad-benches} --bench sentinel --no-run --message-format=json | executable sentinel bench | tail -n 1)
    [[ -x "$BENCHES" ]] || { echo "could not find the sentinel benchmark" >&2; exit 1; }
    TESTS= BPF_TESTS= DAEMON_TESTS= HOST_SUITES=()
else
    BENCHES=
    log "building the guest tests"
    # Built as `cargo test --workspace` builds them (./dev.sh test runs it just before, and
    # this then finds everything built): the test binaries with the agent example and the
    # daemons beside them. A build with `-p`, or a `cargo build`, resolves features and
    # profiles its own way and rebuilt the shared dependencies (3.5 minutes of CI's two
    # CPUs) into binaries that differ from the host suite's in nothing the guests need.
    BUILT=$(cargo test --quiet --workspace --no-run --message-format=json)
    # Each crate's integration tests are one binary whose modules are the suites.
    TESTS=$(executable sentinel test <<<"$BUILT" | tail -n 1)
    [[ -x "$TESTS" ]] || { echo "could not find ironclad-sentinel's test binary" >&2; exit 1; }
    # ironclad-bpf's: the stateful firewall on the guest kernels (its verifier, its
    # programs, tcx's absence: the firewall_guest suite, ignored on the host), and the
    # host suites of the features that need `bpf_loop`, BTF tracepoints and uprobes
    # (the identity firewall, by executable and by DNS name, DNS and bandwidth
    # telemetry, TLS capture, the process cache), run unchanged in every kernel's guest:
    # README's kernel table states what ran. And how much of the verifier's budget
    # every program takes on each kernel (verifier_budget). Suites that run on some
    # kernels only are named on their lines of guest/kernels.
    BPF_TESTS=$(executable bpf test <<<"$BUILT" | tail -n 1)
    [[ -x "$BPF_TESTS" ]] || { echo "could not find ironclad-bpf's test binary" >&2; exit 1; }
    # The daemon's: daemon_kernel, one policy with every feature, each running or
    # naming what the kernel lacks (on every kernel: the one suite that states, for
    # each, what runs there).
    DAEMON_TESTS=$(executable daemon test <<<"$BUILT" | tail -n 1)
    [[ -x "$DAEMON_TESTS" ]] || { echo "could not find full_firewall's test binary" >&2; exit 1; }
    # shield_prog_run: the Shield's verdicts and events under each kernel's verifier
    # (on 6.1 and 5.10 it found IPv6 drop events reporting the header read as IPv4).
    HOST_SUITES=(verifier_budget shield_prog_run egress_domains telemetry_sockets tls_uprobe process_cache)
fi

# The test run's short mode (IRONCLAD_BENCH_QUICK, as ./dev.sh test runs the
# host's benchmarks): criterion's --quick and the benchmark's own rounds fewer;
# every figure still produced. Otherwise (./dev.sh perf) measured in full.
if [[ -n "${IRONCLAD_BENCH_QUICK:-}" ]]; then
    bench_env="IRONCLAD_BENCH_QUICK=1"
    bench_args="--quick --measurement-time 0.3 --nresamples 1000 --noplot"
else
    bench_env=""
    bench_args="--warm-up-time 1 --measurement-time 3 --noplot"
fi

status=0
ran=0
# The list on descriptor 3, not stdin: QEMU reads its stdin, and a guest given the list
# there read the lines after its own, so the kernels after the first never booted and
# the run passed on one kernel (seen by hand with GUEST_FILTER; it depends on what the
# guest console reads before it ends).
while read -r name pattern only_here cmdline <&3; do
    [[ -z "$name" || "$name" == \#* ]] && continue
    [[ -n "${GUEST_KERNEL:-}" && "$name" != "$GUEST_KERNEL" ]] && continue
    [[ -n "${GUEST_SKIP:-}" && "$name" == "$GUEST_SKIP" ]] && continue
    ran=$((ran + 1))
    # The benchmark in the first kernel listed only: one set of figures.
    bench_here=$BENCHES
    # Every kernel's suites, then the kernel's own (guest/kernels' third column); a
    # column that begins with '=' lists all the kernel runs instead ('-': none more).
    suites_here="sentinel_guest firewall_guest daemon_kernel ${HOST_SUITES[*]}"
    [[ "$only_here" == -* ]] && only_here=
    if [[ "$only_here" == =* ]]; then
        suites_here="${only_here#=}"
        suites_here="${suites_here//,/ }"
    else
        suites_here+=" ${only_here//,/ }"
    fi
    ((BENCH)) && suites_here=
    if ((BENCH && ran > 1)); then break; fi
    read -r ver image < <(fetch_kernel "$pattern")
    out=$WORK/run-$name
    rm -rf "$out" && mkdir -p "$out"
    cat > "$out/guest.sh" <<GUEST
#!/bin/bash
exec > "$out/output.txt" 2>&1
cd "$ROOT"
mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
# Temporary files on a tmpfs of their own: virtme-ng's /tmp is an overlay on the 9p
# root, where a test's own overlay mount (egress_connect's binary on overlayfs) cannot
# take its upper layer. Not mounted over /tmp: a checkout under /tmp (a fresh clone)
# would vanish beneath it.
mkdir -p /run/ironclad-guest-tmp
mount -t tmpfs tmpfs /run/ironclad-guest-tmp
export TMPDIR=/run/ironclad-guest-tmp
echo "guest kernel: \$(uname -r); LSMs: \$(cat /sys/kernel/security/lsm)"
# One suite (a module of a crate's test binary) on one thread: its tests whose names
# contain GUEST_FILTER, if set (libtest's own filters would match either, not both).
# A suite written SUITE!A!B leaves out its tests whose names contain A or B (a kernel
# that cannot carry what they need, said on its line of guest/kernels).
run_suite() {
    local bin=\$1 suite=\$2 names out=
    shift 2
    if [[ \$suite == *'!'* ]]; then
        out=\${suite#*!}
        suite=\${suite%%!*}
    fi
    names=\$("\$bin" --list --format terse "\$@" "\$suite::" | sed -n 's/: test\$//p' | grep -F -- "${GUEST_FILTER:-}")
    local leave
    for leave in \${out//!/ }; do
        names=\$(grep -vF -- "\$leave" <<<"\$names")
    done
    if [[ -z "\$names" ]]; then
        # A suite with no test at all is a renamed module, not a pass.
        [[ -n "${GUEST_FILTER:-}" ]] || { echo "guest suite \$suite: no such suite in \$bin"; return 1; }
        echo "guest suite \$suite: no test matches '${GUEST_FILTER:-}'"
        return 0
    fi
    # shellcheck disable=SC2086 # one test name a word
    # --show-output: what passing tests say goes to the run's output too (the
    # firewall's verified instructions against the verifier's budget, for one).
    # --report-time: each test's seconds on its line (libtest's unstable option, which
    # RUSTC_BOOTSTRAP lets a stable build's harness take): where a guest's time goes.
    RUSTC_BOOTSTRAP=1 IRONCLAD_GUEST=1 "\$bin" "\$@" --test-threads=1 --show-output \
        -Z unstable-options --report-time --exact \$names
}
# Each suite in its crate's test binary, from the crate's directory (where its tests
# find their data): sentinel_* in ironclad-sentinel's, daemon_* in full_firewall's, the
# others in ironclad-bpf's. The *_guest suites are ignored on the host: run with
# --ignored here.
suites=0
for suite in $suites_here; do
    echo "guest suite: \$suite"
    began=\$SECONDS
    case \$suite in
        sentinel_*) bin="$TESTS" dir="$ROOT" ;;
        daemon_*) bin="$DAEMON_TESTS" dir="$ROOT/examples/full_firewall" ;;
        *) bin="$BPF_TESTS" dir="$ROOT/ironclad-bpf" ;;
    esac
    ignored=
    [[ \${suite%%!*} == *_guest ]] && ignored=--ignored
    # shellcheck disable=SC2086 # ignored is one word or none
    (cd "\$dir" && run_suite "\$bin" "\$suite" \$ignored </dev/null) || suites=1
    echo "guest suite: \$suite took \$((SECONDS - began)) s"
done
echo "\$suites" > "$out/rc"
if [[ -n "$bench_here" ]]; then
    IRONCLAD_GUEST=1 IRONCLAD_FIGURES="$out/figures.jsonl" $bench_env "$bench_here" --bench $bench_args
    echo "\$?" > "$out/bench-rc"
fi
GUEST
    chmod +x "$out/guest.sh"
    log "$name: booting $ver (TCG)"
    started=$SECONDS
    # --verbose: the guest kernel's console goes to vng.log, so a guest that dies says why.
    # One vCPU: the tests run on one thread, and with two, QEMU 7.2's multi-threaded TCG
    # (Debian 12) ended about one 6.12 run in six in a double fault inside the guest's
    # slab allocator (kmem_cache_alloc_lru_noprof from pipe2, no program of ours on that
    # path). One vCPU is single-threaded TCG, and leaves the host's checks the other core.
    # The limit per guest: 2,700 s. At 1,800 s the 6.1 guest (6.1.0-57, whose
    # egress_domains suite loads again and takes ~7 minutes under TCG) was stopped in the
    # suite's last test while CI's host tests ran beside it (run of 2c56137: 63.8
    # minutes in all, the 6.12 guest 1,350 s); the whole run stays well under CI's 90.
    timeout "${GUEST_TIMEOUT:-2700}" vng --verbose --run "$image" --disable-kvm --force-9p --memory 2G --cpus "${GUEST_CPUS:-1}" \
        ${cmdline:+--append "$cmdline"} --rwdir "$out" --exec "$out/guest.sh" </dev/null >"$out/vng.log" 2>&1 || true
    cat "$out/output.txt" 2>/dev/null || true
    log "$name: guest run took $((SECONDS - started)) s"
    if [[ "$(cat "$out/rc" 2>/dev/null)" != 0 ]]; then
        echo "guest $name: tests failed or did not finish (see $out/vng.log)" >&2
        if grep -q "Kernel panic\|PANIC:" "$out/vng.log" 2>/dev/null; then
            # Not a test's failure but the guest's kernel dying: say so, with its trace.
            echo "guest $name: the guest kernel panicked; its console from the first oops:" >&2
            sed -n '/PANIC:\|Oops\|BUG:\|Kernel panic/,$p' "$out/vng.log" | head -n 60 >&2 || true
        else
            tail -n 20 "$out/vng.log" >&2 || true
        fi
        status=1
    fi
    if [[ -n "$bench_here" && "$(cat "$out/bench-rc" 2>/dev/null)" != 0 ]]; then
        echo "guest $name: benchmark failed" >&2
        status=1
    fi
    # The benchmark's own figures (its rounds), for docs/performance.md (dev.sh perf).
    if [[ -n "$bench_here" && -n "${IRONCLAD_FIGURES:-}" && -s "$out/figures.jsonl" ]]; then
        cat "$out/figures.jsonl" >> "$IRONCLAD_FIGURES"
    fi
done 3< guest/kernels
# A guest step that booted nothing proved nothing: fail rather than pass empty.
if ((ran == 0)); then
    echo "guest/kernels lists no kernel: no guest test ran" >&2
    exit 1
fi
exit $status
