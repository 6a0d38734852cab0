#!/usr/bin/env bash
# scripts/package-deb.sh: builds the Debian package, target/debian/kvmtune_VERSION-1_amd64.deb.
#
# What it holds:
#   /usr/bin/kvmtune                          the release build, stripped
#   /usr/share/man/man1/kvmtune*.1.gz         a page for kvmtune and one per subcommand,
#                                             made by `kvmtune generate man` from the CLI itself
#   bash, zsh and fish completions            `kvmtune generate completions`
#   /usr/share/kvmtune/monitoring/            the Prometheus alert rules, the Grafana dashboard
#   /usr/lib/kvmtune/guest/                   kvmtune-guest for Linux and Windows, when built
#                                             (scripts/build-guest.sh), to copy into guests
#   /lib/systemd/system/kvmtune-exporter.service   not enabled: the exporter listens on a port
#   /usr/share/doc/kvmtune/                   copyright, changelog, the crates' licences
# The libvirt hook is not in the package: `kvmtune hook install` puts it in place, because a
# hook runs at every start of every domain of the host and libvirtd reads its hooks only when
# it starts; installing kvmtune should not change what starting a VM does.
#
# Needs dpkg-dev (dpkg-shlibdeps) and, to check the result, lintian (scripts/test.sh installs
# both). `--binary FILE` packages that kvmtune instead of building the release one, and
# `--out DIR` writes the package there (the tests use both).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
binary= out=target/debian
while [ $# -ge 1 ]; do
  case "$1" in
    --binary) binary=${2:?--binary takes a file}; shift 2 ;;
    --out) out=${2:?--out takes a directory}; shift 2 ;;
    *) echo "usage: scripts/package-deb.sh [--binary FILE] [--out DIR]" >&2; exit 2 ;;
  esac
done
if [ -z "$binary" ]; then
  cargo build --release --locked --quiet -p kvmtune-cli
  binary=target/release/kvmtune
fi

# The workspace's version (Cargo.toml, [workspace.package]).
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
[ -n "$version" ] || { echo "package-deb.sh: no version in Cargo.toml's [workspace.package]" >&2; exit 2; }
arch=$(dpkg --print-architecture)
mkdir -p "$out"
out=$(cd "$out" && pwd)
root=$out/kvmtune_$version-1_$arch
rm -rf "$root"
install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/man/man1" "$root/usr/share/doc/kvmtune" \
  "$root/usr/share/kvmtune/monitoring" "$root/lib/systemd/system" \
  "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
  "$root/usr/share/fish/vendor_completions.d"

install -m 0755 "$binary" "$root/usr/bin/kvmtune"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/kvmtune"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$root/usr/bin/kvmtune" generate man "$scratch/man"
for page in "$scratch"/man/*.1; do
  gzip -9n <"$page" >"$root/usr/share/man/man1/$(basename "$page").gz"
done
"$root/usr/bin/kvmtune" generate completions "$scratch/completions"
install -m 0644 "$scratch/completions/kvmtune.bash" "$root/usr/share/bash-completion/completions/kvmtune"
install -m 0644 "$scratch/completions/_kvmtune" "$root/usr/share/zsh/vendor-completions/_kvmtune"
install -m 0644 "$scratch/completions/kvmtune.fish" "$root/usr/share/fish/vendor_completions.d/kvmtune.fish"

install -m 0644 monitoring/kvmtune-alerts.yml monitoring/kvmtune-dashboard.json "$root/usr/share/kvmtune/monitoring/"
install -m 0644 packaging/debian/kvmtune-exporter.service "$root/lib/systemd/system/"
if [ -f target/guest/kvmtune-guest ] || [ -f target/guest/kvmtune-guest.exe ]; then
  install -d "$root/usr/lib/kvmtune/guest"
  for guest in target/guest/kvmtune-guest target/guest/kvmtune-guest.exe; do
    [ ! -f "$guest" ] || install -m 0755 "$guest" "$root/usr/lib/kvmtune/guest/"
  done
  [ ! -f "$root/usr/lib/kvmtune/guest/kvmtune-guest" ] ||
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/lib/kvmtune/guest/kvmtune-guest"
fi

install -m 0644 packaging/debian/copyright "$root/usr/share/doc/kvmtune/copyright"
install -d "$root/usr/share/lintian/overrides"
install -m 0644 packaging/debian/lintian-overrides "$root/usr/share/lintian/overrides/kvmtune"
# Every crate linked into the binary (kvmtune's own left out), with the licence its authors
# declare, as cargo resolves them for this machine.
cargo tree --offline --locked -p kvmtune-cli -e normal --prefix none --format '{p}: {l}' |
  grep -v ' (/' | LC_ALL=C sort -u >"$root/usr/share/doc/kvmtune/crate-licenses.txt"
gzip -9n >"$root/usr/share/doc/kvmtune/changelog.Debian.gz" <<CHANGELOG
kvmtune ($version-1) unstable; urgency=medium

  * Built from the kvmtune repository by scripts/package-deb.sh.

 -- kvmtune developers <kvmtune@example.invalid>  $(date -R -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")
CHANGELOG

# Only daemon-reload: the exporter is not enabled or started by the package.
cat >"$root/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl --system daemon-reload >/dev/null || true
fi
SCRIPT
cat >"$root/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  deb-systemd-invoke stop kvmtune-exporter.service >/dev/null || true
fi
SCRIPT
cat >"$root/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = purge ] && command -v deb-systemd-helper >/dev/null; then
  deb-systemd-helper purge kvmtune-exporter.service >/dev/null || true
fi
SCRIPT
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

# The shared libraries the binary links, as dpkg-shlibdeps names their packages.
mkdir -p "$scratch/debian"
printf 'Source: kvmtune\n\nPackage: kvmtune\nArchitecture: any\n' >"$scratch/debian/control"
depends=$(cd "$scratch" && dpkg-shlibdeps -O "$root/usr/bin/kvmtune" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
cat >"$root/DEBIAN/control" <<CONTROL
Package: kvmtune
Version: $version-1
Architecture: $arch
Maintainer: kvmtune developers <kvmtune@example.invalid>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: $depends
Recommends: libvirt-clients
Suggests: qemu-system-x86, prometheus
Section: admin
Priority: optional
Homepage: https://example.invalid/kvmtune
Description: make Windows guests on KVM fast, and prove it
 kvmtune reads the host and a VM's configuration (libvirt, QEMU, Proxmox,
 KubeVirt) and says what costs a Windows guest its speed: Hyper-V
 enlightenments, timers, CPU pinning, host isolation, VM exits. It writes a
 tuned configuration, prepares the host for a VM and undoes it exactly
 (journaled, only with --apply), hands a GPU's IOMMU group to vfio-pci, runs
 as a libvirt hook, measures configurations against each other, and serves
 KVM's counters to Prometheus.
CONTROL

(cd "$root" && find usr lib -type f | LC_ALL=C sort | xargs md5sum >DEBIAN/md5sums)
dpkg-deb --root-owner-group -Zxz --build "$root" "$out/" >/dev/null
echo "$out/kvmtune_$version-1_$arch.deb"
