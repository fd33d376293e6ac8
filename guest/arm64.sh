#!/usr/bin/env bash
# Runs ironclad-bpf's kernel-facing suites on a Debian arm64 kernel, in QEMU's emulated
# aarch64 machine (qemu-system-aarch64, TCG), from this x86_64 machine.
#
#   guest/arm64.sh                 install what is missing, build, run the suites below
#   guest/arm64.sh SUITE...        only these suites (modules of ironclad-bpf's tests), or
#                                  tests by their whole name (`egress_connect::NAME`)
#   guest/arm64.sh --daemon        the daemon end to end, one test per feature (below);
#                                  `daemon_*::NAME` arguments name others
#   GUEST_FILTER=NAME guest/arm64.sh   only the tests whose name contains NAME
#
# What it does, and why each part is needed:
# - The guest needs arm64 user space (the host's x86 root cannot run there): a Debian
#   bookworm arm64 root, unpacked from its packages with mmdebstrap's `extract` variant
#   (no maintainer scripts, so no emulation on the host), with the tools the tests start
#   (ip, bpftool, python3, openssl, curl, dnsmasq, nft). It is also the sysroot of the
#   cross build: clang (`--target=aarch64-linux-gnu`) compiles libbpf and links with
#   mold against its glibc, libelf and zlib, so no cross gcc and no arm64 packages are
#   installed on the host.
# - ironclad-bpf's build script compiles the BPF objects for the crate's target
#   (`-D__TARGET_ARCH_arm64`, bpf-src/include/arm64/vmlinux.h): the uprobes read
#   `struct user_pt_regs` there.
# - The kernel is Debian's arm64 build of 6.12 (trixie), from a separate apt state
#   (the machine's sources are not touched). Its modules are .ko.xz, which the guest's
#   early loader cannot read: they are decompressed into the root once.
# - virtme-ng boots it (`--arch arm64 --root`): the root is exported over 9p, and this
#   checkout is bind-mounted into it at its own path, so the test binary runs from
#   ironclad-bpf/ as on the host.
# Everything fetched is kept under $IRONCLAD_ARM64_CACHE (default
# /var/cache/ironclad/arm64) and reused; the results come back in target/guest/arm64/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${IRONCLAD_ARM64_CACHE:-/var/cache/ironclad/arm64}
WORK=$ROOT/target/guest/arm64
SYSROOT=$CACHE/root
# The suites that ran here (docs/testing.md says which ran on which kernel, and how long).
DEFAULT_SUITES=(loader_audit loader_pinning shield_prog_run firewall_guest)
# The daemon (examples/full_firewall, its `daemon` test binary) end to end on arm64, one
# test per feature: the Shield, the stateful firewall, NAT, SYN cookies, IDS, scrub and
# quarantine, the identity firewall, DNS names, telemetry, TLS, the process cache.
DAEMON_TESTS=(
    daemon_shield::enforcement_survives_kill_9_is_adopted_on_restart_and_detach_removes_everything
    daemon_firewall::a_stateful_default_deny_through_the_daemon_survives_kill_9_restarts_and_reloads
    daemon_firewall::nat_through_the_daemon_forwards_masquerades_and_shows_translations
    daemon_firewall::syn_cookies_through_the_daemon_answer_in_xdp_and_reload_off
    daemon_firewall::ids_rules_through_the_daemon_alert_drop_and_check_locates_a_bad_rule
    daemon_firewall::scrub_and_quarantine_through_the_daemon_rewrite_tag_reload_and_check_locates_mistakes
    daemon_shield::egress_section_denies_by_executable_survives_kill_9_and_reports_json
    daemon_domains::the_daemon_enforces_names_and_feeds_and_shows_the_live_table
    daemon_shield::telemetry_section_writes_dns_and_bandwidth_events
    daemon_shield::tls_section_writes_plaintext_events_as_json_lines
    daemon_shield::a_process_cache_too_small_for_the_host_says_so_in_status_and_events
)
# The root's packages: busybox (virtme-ng builds the guest's initramfs from it), the
# tests' tools (a C compiler: some tests build their clients),
# and the cross build's libraries.
PACKAGES=base-passwd,busybox-static,libc6,libc6-dev,libgcc-12-dev,gcc,bind9-dnsutils,ethtool,libelf-dev,zlib1g-dev,libzstd-dev,iproute2,bpftool,python3,kmod,procps,iputils-ping,util-linux,mount,libssl3,openssl,curl,dnsmasq-base,nftables,iptables,attr,dash,bash,coreutils,grep,sed,findutils,gawk,diffutils,tar,gzip
KERNEL_SUITE=trixie
KERNEL_PATTERN='linux-image-6.12.*.deb13-arm64-unsigned'  # '.' matches the '+' of '6.12.117+deb13'

log() { printf '\033[1m==> arm64 [%ds]: %s\033[0m\n' "$SECONDS" "$*" >&2; }

# shellcheck source=guest/common.sh
source "$ROOT/guest/common.sh"

install_tools() {
    install_guest_tools mmdebstrap qemu-system-arm xz-utils kmod
    rustup target list --installed | grep -qx aarch64-unknown-linux-gnu \
        || rustup target add aarch64-unknown-linux-gnu
}

# The arm64 root, rebuilt when its package list changes.
make_root() {
    local stamp
    stamp=$(printf '%s merged-usr' "$PACKAGES" | sha256sum | cut -c1-16)
    [[ -f $SYSROOT/.ironclad-root-$stamp ]] && return 0
    log "unpacking a Debian arm64 root (mmdebstrap, extract)"
    rm -rf "$SYSROOT" "$CACHE/root.tar"
    mkdir -p "$SYSROOT"
    mmdebstrap --quiet --variant=extract --arch=arm64 --include="$PACKAGES" bookworm \
        "$CACHE/root.tar" http://deb.debian.org/debian
    tar -C "$SYSROOT" -xf "$CACHE/root.tar"
    rm -f "$CACHE/root.tar"
    # The names Debian's maintainer scripts would have made (update-alternatives), which
    # the extract variant does not run: the tests compile clients with `cc`.
    ln -sf gcc "$SYSROOT/usr/bin/cc"
    ln -sf gawk "$SYSROOT/usr/bin/awk"
    ln -sf xtables-nft-multi "$SYSROOT/usr/sbin/iptables"
    # The users and groups base-passwd's maintainer script would install (root, nobody,
    # ...): dnsmasq --user=root and the daemon's privilege drop look them up.
    cp "$SYSROOT/usr/share/base-passwd/passwd.master" "$SYSROOT/etc/passwd"
    cp "$SYSROOT/usr/share/base-passwd/group.master" "$SYSROOT/etc/group"
    # A merged /usr, as every installed Debian since bookworm has (usrmerge runs in a
    # maintainer script, which the extract variant does not): /bin, /sbin and /lib are
    # links into /usr, so a program is found under both names (the tests name
    # /usr/bin/bash as an ancestor; the unmerged root had only /bin/bash).
    local d
    for d in bin sbin lib; do
        [[ -L $SYSROOT/$d || ! -d $SYSROOT/$d ]] && continue
        mkdir -p "$SYSROOT/usr/$d"
        cp -a "$SYSROOT/$d/." "$SYSROOT/usr/$d/"
        rm -rf "${SYSROOT:?}/$d"
        ln -s "usr/$d" "$SYSROOT/$d"
    done
    mkdir -p "$SYSROOT/out"
    touch "$SYSROOT/.ironclad-root-$stamp"
}

# Prints the kernel's version and image path, its modules installed in the root.
fetch_kernel() {
    local apt=$CACHE/apt pkg dir ver
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
    echo "deb [arch=arm64] http://deb.debian.org/debian $KERNEL_SUITE main" > "$apt/sources.list"
    local opts=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o Dir::Etc::sourceparts=-
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
        -o APT::Architecture=arm64 -o APT::Architectures::=arm64)
    pkg=$(apt-cache "${opts[@]}" search --names-only "^${KERNEL_PATTERN//\*/[0-9]+}\$" 2>/dev/null | awk '{print $1}' | sort -V | tail -n 1)
    if [[ -z "$pkg" ]]; then
        apt-get "${opts[@]}" update -qq >&2
        pkg=$(apt-cache "${opts[@]}" search --names-only "^${KERNEL_PATTERN//\*/[0-9]+}\$" | awk '{print $1}' | sort -V | tail -n 1)
    fi
    [[ -n "$pkg" ]] || { echo "no Debian arm64 package matches $KERNEL_PATTERN" >&2; return 1; }
    dir=$CACHE/kernels/$pkg
    if [[ ! -d $dir/boot ]]; then
        log "fetching $pkg" 
        rm -rf "$dir" && mkdir -p "$dir"
        (cd "$dir" && apt-get "${opts[@]}" download -qq "$pkg:arm64" 2>/dev/null && dpkg -x ./*.deb . && rm -f ./*.deb)
    fi
    ver=$(ls "$dir/usr/lib/modules" 2>/dev/null || ls "$dir/lib/modules")
    if [[ ! -f $SYSROOT/lib/modules/$ver/modules.dep ]]; then
        log "installing $ver's modules in the root (decompressed)"
        mkdir -p "$SYSROOT/lib/modules"
        cp -a "$(ls -d "$dir"/usr/lib/modules/"$ver" "$dir"/lib/modules/"$ver" 2>/dev/null | head -n 1)" "$SYSROOT/lib/modules/"
        find "$SYSROOT/lib/modules/$ver" -name '*.ko.xz' -print0 | xargs -0 -r -P "$(nproc)" -n 200 xz -d
        depmod -b "$SYSROOT" "$ver"
    fi
    echo "$ver $dir/boot/vmlinuz-$ver"
}

# The test binary of package $1 named $2 for aarch64 (and, for the daemon's, the daemon
# itself: cargo builds a package's programs with its integration tests): clang as the C
# compiler and linker, the root as sysroot.
cross_build() {
    local cc=$WORK/aarch64-cc
    mkdir -p "$WORK"
    printf '#!/bin/sh\nexec clang --target=aarch64-linux-gnu --sysroot=%s -fuse-ld=mold "$@"\n' "$SYSROOT" > "$cc"
    chmod +x "$cc"
    env CC_aarch64_unknown_linux_gnu="$cc" AR_aarch64_unknown_linux_gnu=llvm-ar \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER="$cc" \
        LIBBPF_SYS_LIBRARY_PATH_aarch64_unknown_linux_gnu="$SYSROOT/usr/lib/aarch64-linux-gnu" \
        PKG_CONFIG_SYSROOT_DIR="$SYSROOT" \
        PKG_CONFIG_LIBDIR="$SYSROOT/usr/lib/aarch64-linux-gnu/pkgconfig:$SYSROOT/usr/share/pkgconfig" \
        cargo test --quiet -p "$1" --target aarch64-unknown-linux-gnu --no-run --message-format=json \
        | executable "$2" test | tail -n 1
}

# Whether $1 is an aarch64 executable: e_machine 183 (EM_AARCH64) in its ELF header.
aarch64_executable() {
    [[ -x "$1" && $(od -An -j18 -N2 -tu2 "$1" | tr -d ' ') == 183 ]]
}

install_tools
mkdir -p "$CACHE"
make_root
read -r ver image < <(fetch_kernel)
suites=()
for arg in "$@"; do
    if [[ $arg == --daemon ]]; then
        suites+=("${DAEMON_TESTS[@]}")
    else
        suites+=("$arg")
    fi
done
((${#suites[@]})) || suites=("${DEFAULT_SUITES[@]}")
BIN= DAEMON_BIN= need_bpf=0 need_daemon=0
for suite in "${suites[@]}"; do
    if [[ $suite == daemon_* ]]; then need_daemon=1; else need_bpf=1; fi
done
if ((need_bpf)); then
    log "building ironclad-bpf's tests for aarch64"
    BIN=$(cross_build ironclad-bpf bpf)
    aarch64_executable "$BIN" || { echo "no aarch64 test binary of ironclad-bpf ($BIN)" >&2; exit 1; }
fi
if ((need_daemon)); then
    log "building the daemon and its tests for aarch64"
    DAEMON_BIN=$(cross_build full_firewall daemon)
    aarch64_executable "$DAEMON_BIN" || { echo "no aarch64 test binary of the daemon ($DAEMON_BIN)" >&2; exit 1; }
fi

# The checkout at its own path inside the root, for the test binary and its data.
mkdir -p "$SYSROOT$ROOT"
mountpoint -q "$SYSROOT$ROOT" || mount --bind "$ROOT" "$SYSROOT$ROOT"
trap 'umount "$SYSROOT$ROOT" 2>/dev/null || true' EXIT
out=$SYSROOT/out
rm -f "$out"/output.txt "$out"/rc
cat > "$out/guest.sh" <<GUEST
#!/bin/bash
exec > /out/output.txt 2>&1
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
# virtme-ng makes /tmp an overlay on the 9p root, and an overlay cannot be the upper
# layer of another: the tests' own overlay mounts (executables on overlayfs) need /tmp
# on a file system of its own.
mount -t tmpfs tmpfs /tmp
echo "guest kernel: \$(uname -r) \$(uname -m); LSMs: \$(cat /sys/kernel/security/lsm)"
rc=0
for suite in ${suites[*]}; do
    # The daemon's tests run from its package's directory, ironclad-bpf's from theirs.
    if [[ \$suite == daemon_* ]]; then
        bin="$DAEMON_BIN"; cd "$ROOT/examples/full_firewall"
    else
        bin="$BIN"; cd "$ROOT/ironclad-bpf"
    fi
    # Suites whose tests are ignored on the host (they need a guest's kernel) run
    # with --ignored; the others as on the host. A whole name is one test.
    extra=
    [[ \$suite == *_guest ]] && extra=--ignored
    filter="\$suite::"
    [[ \$suite == *::* ]] && filter=\$suite
    names=\$("\$bin" --list --format terse \$extra "\$filter" | sed -n 's/: test\$//p' | grep -F -- "${GUEST_FILTER:-}")
    if [[ -z "\$names" ]]; then
        [[ -n "${GUEST_FILTER:-}" ]] || { echo "suite \$suite: no such suite"; rc=1; }
        continue
    fi
    began=\$SECONDS
    # shellcheck disable=SC2086 # one test name a word
    IRONCLAD_GUEST=1 "\$bin" \$extra --test-threads=1 --exact \$names < /dev/null || rc=1
    echo "suite \$suite took \$((SECONDS - began)) s"
done
echo \$rc > /out/rc
GUEST
chmod +x "$out/guest.sh"
log "booting $ver (qemu-system-aarch64, TCG): ${suites[*]}"
mkdir -p "$WORK"
started=$SECONDS
timeout "${GUEST_TIMEOUT:-3600}" vng --verbose --arch arm64 --root "$SYSROOT" --run "$image" \
    --disable-kvm --force-9p --memory 2G --rwdir "$out" --exec /out/guest.sh > "$WORK/vng.log" 2>&1 || true
cp "$out/output.txt" "$WORK/output.txt" 2>/dev/null || true
cat "$WORK/output.txt" 2>/dev/null || true
log "guest run took $((SECONDS - started)) s"
if [[ "$(cat "$out/rc" 2>/dev/null)" != 0 ]]; then
    echo "arm64 guest: tests failed or did not finish (see $WORK/vng.log)" >&2
    tail -n 20 "$WORK/vng.log" >&2
    exit 1
fi
