#!/usr/bin/env bash
# Builds full_firewall as it ships: release, without the demo lab, glibc linked in
# statically (a static-pie), so the one file runs on an empty root (the image's
# `scratch` base) with libbpf, libelf and zlib inside. glibc 2.34+ resolves names from
# /etc/hosts and DNS without loading NSS modules, so fetched feeds still resolve.
# The Dockerfile runs this; so does the test suite (footprint, deploy, image checks).
#   build-static.sh [OUT]    builds, copies the binary to OUT if given, prints its path
set -euo pipefail
cd "$(dirname "$0")/../.."
host=$(rustc -vV | sed -n 's/^host: //p')
# Its own target directory: the static flags would otherwise rebuild the workspace's
# release artifacts (benchmarks) each time.
# One codegen unit per crate: the code comes out smaller (20.3 MB instead of 26.3 MB),
# and its resident pages with it (a daemon holding a 100,000-line feed: 18.2 MiB
# instead of 20.0 MiB, most of the difference in text pages). On 2 CPUs the build
# took as long as with the default 16 units (3 min 15 s from scratch, measured both ways).
CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --quiet -p full_firewall \
    --no-default-features --target "$host" --target-dir target/static
bin=$PWD/target/static/$host/release/full_firewall
if [[ $# -ge 1 ]]; then
    install -D -m 755 "$bin" "$1"
    bin=$1
fi
echo "$bin"
