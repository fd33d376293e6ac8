#!/usr/bin/env bash
# Builds the Debian package of the reference daemon from the shipped binary
# (build-static.sh: one static file, so the package depends on nothing):
#   /usr/sbin/full_firewall, its manual page and shell completions,
#   /usr/lib/systemd/system/ironclad.service (examples/deploy/ironclad.service, the
#   binary's path changed), /etc/ironclad/policy.yaml and /etc/default/ironclad
#   (conffiles), and maintainer scripts that enable and start nothing (postinst),
#   detach what the daemon pinned on removal (prerm) and remove its state on purge
#   (postrm).
#   build-deb.sh [OUT_DIR]    builds, prints the .deb's path (default: target/debian)
set -euo pipefail
cd "$(dirname "$0")/../../.."
here=examples/deploy/debian
out=${1:-$PWD/target/debian}
bin=$(examples/deploy/build-static.sh)
version=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="full_firewall"))')
arch=$(dpkg --print-architecture)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
install -D -m 755 "$bin" "$root/usr/sbin/full_firewall"
# Without its symbols (what a crash report would name comes from the build, not the
# host): 5 MB less to install. The check runs this stripped copy.
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/sbin/full_firewall"
install -d "$root/usr/lib/systemd/system"
sed 's#/usr/local/bin/full_firewall#/usr/sbin/full_firewall#g' examples/deploy/ironclad.service \
    | sed '/^# Install: copy full_firewall/,/^#   systemctl daemon-reload/c\# Installed by the ironclad package. Set IRONCLAD_IFACE in /etc/default/ironclad and\n# the policy in /etc/ironclad/policy.yaml, then\n#   systemctl enable --now ironclad' \
    > "$root/usr/lib/systemd/system/ironclad.service"
chmod 644 "$root/usr/lib/systemd/system/ironclad.service"
install -D -m 644 "$here/policy.yaml" "$root/etc/ironclad/policy.yaml"
install -D -m 644 "$here/default" "$root/etc/default/ironclad"
install -d "$root/usr/share/man/man1" "$root/usr/share/bash-completion/completions" \
    "$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d" \
    "$root/usr/share/doc/ironclad"
"$bin" manpage | gzip -9n > "$root/usr/share/man/man1/full_firewall.1.gz"
"$bin" completions bash > "$root/usr/share/bash-completion/completions/full_firewall"
"$bin" completions zsh > "$root/usr/share/zsh/vendor-completions/_full_firewall"
"$bin" completions fish > "$root/usr/share/fish/vendor_completions.d/full_firewall.fish"
{
    echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
    echo "Upstream-Name: ironclad"
    echo "Source: https://github.com/ironclad-rs/ironclad"
    echo
    echo "Files: *"
    echo "License: MIT"
    sed 's/^$/./; s/^/ /' LICENSE
    # The dashboard's chart library, compiled into the binary.
    echo
    echo "Files: examples/full_firewall/src/vendor/*"
    echo "Copyright: 2022 Leon Sorokin"
    echo "License: MIT"
    sed 's/^$/./; s/^/ /' examples/full_firewall/src/vendor/uPlot.LICENSE
} > "$root/usr/share/doc/ironclad/copyright"
{
    echo "ironclad ($version-1) unstable; urgency=medium"
    echo
    echo "  * Built from $(git rev-parse --short HEAD 2>/dev/null || echo 'a source tree')."
    echo
    echo " -- Ironclad developers <ironclad@users.noreply.github.com>  $(date -R -u -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")"
} | gzip -9n > "$root/usr/share/doc/ironclad/changelog.Debian.gz"
install -D -m 644 "$here/lintian-overrides" "$root/usr/share/lintian/overrides/ironclad"
find "$root/usr/share" -type f -exec chmod 644 {} +
install -d "$root/DEBIAN"
for script in postinst prerm postrm; do
    install -m 755 "$here/$script" "$root/DEBIAN/$script"
done
printf '/etc/ironclad/policy.yaml\n/etc/default/ironclad\n' > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/control" <<CONTROL
Package: ironclad
Version: $version-1
Architecture: $arch
Maintainer: Ironclad developers <ironclad@users.noreply.github.com>
Section: net
Priority: optional
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Homepage: https://github.com/ironclad-rs/ironclad
Description: eBPF host firewall: XDP blocklists, stateful firewall, egress rules
 full_firewall enforces one YAML policy in the kernel with eBPF: the Shield
 drops packets from blocklists (files, fetched feeds, GeoLite2) at the driver
 (XDP); a stateful firewall with connection tracking, NAT and SYN cookies; and
 egress rules by executable, user and DNS name. Enforcement stays pinned in
 the kernel across restarts.
 .
 Installing enables and starts nothing: review /etc/ironclad/policy.yaml and
 /etc/default/ironclad, then run: systemctl enable --now ironclad
CONTROL
mkdir -p "$out"
deb=$out/ironclad_${version}-1_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
