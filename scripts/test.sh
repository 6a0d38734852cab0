#!/usr/bin/env bash
# The test command: installs the system packages the tests need, when they
# are missing, and runs the whole test suite. `.ci/run` calls exactly this.
#
# Why backports: a fresh Debian 12 machine of this project already carries
# qemu-utils 10.0 from bookworm-backports, which conflicts with bookworm's
# QEMU 7.2 packages, so QEMU 10 and libvirt 11 must come from the same suite
# (see ../shared/test-environment.md, section 0).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# command-or-file-that-must-exist:package[:suite]
required=(
  "lstopo-no-graphics:hwloc"
  "bzip2:bzip2"
  "chromium:chromium"
  "/usr/share/OVMF/OVMF_CODE_4M.ms.fd:ovmf"
  "qemu-system-x86_64:qemu-system-x86:bookworm-backports"
  "virsh:libvirt-clients:bookworm-backports"
  "virt-xml-validate:libvirt-clients:bookworm-backports"
  "libvirtd:libvirt-daemon:bookworm-backports"
  "cpio:cpio"
  "depmod:kmod"
  "promtool:prometheus"
  "tmux:tmux"
  "cpuid:cpuid"
  # The Debian package (scripts/package-deb.sh) and its checks.
  "dpkg-shlibdeps:dpkg-dev"
  "lintian:lintian"
  "man:man-db"
  # The systemd lab guest reads the packaged exporter's /metrics with this machine's curl.
  "curl:curl"
  # The guest program's Windows build (scripts/build-guest.sh): Debian's own Rust 1.63 with the
  # Windows standard library, the MinGW linker, and Wine to run it in a test.
  "/usr/bin/cargo:cargo"
  "/usr/lib/rustlib/x86_64-pc-windows-gnu/lib:libstd-rust-dev-windows"
  "x86_64-w64-mingw32-gcc:gcc-mingw-w64-x86-64-posix"
  "/usr/lib/wine/wine64:wine64"
)

missing_plain=()
missing_backports=()
for entry in "${required[@]}"; do
  IFS=: read -r command package suite <<<"$entry"
  if ! command -v "$command" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$command" ] && [ ! -e "$command" ]; then
    if [ "${suite:-}" = bookworm-backports ]; then
      missing_backports+=("$package")
    else
      missing_plain+=("$package")
    fi
  fi
done

if [ ${#missing_plain[@]} -gt 0 ] || [ ${#missing_backports[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "test.sh: missing packages ${missing_plain[*]} ${missing_backports[*]}; run as root to install them" >&2
    exit 2
  fi
  backports=/etc/apt/sources.list.d/bookworm-backports.sources
  if [ ${#missing_backports[@]} -gt 0 ] && [ ! -f "$backports" ]; then
    cat >"$backports" <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if [ ${#missing_backports[@]} -gt 0 ]; then
    # shellcheck disable=SC2046
    apt-get install -y -qq --no-install-recommends -t bookworm-backports \
      $(printf '%s\n' "${missing_backports[@]}" | sort -u) qemu-system-data seabios ipxe-qemu \
      libvirt-daemon-driver-qemu
  fi
  if [ ${#missing_plain[@]} -gt 0 ]; then
    # shellcheck disable=SC2046
    apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${missing_plain[@]}" | sort -u)
  fi
fi

# The lab guest's kernels and busybox (scripts/lab): downloaded, not installed, into its cache.
# The newest bookworm-backports 6.12 (cgroup v2) and bookworm 6.1 (cgroup v1) of the day.
lab_cache=${KVMTUNE_LAB_CACHE:-/var/cache/kvmtune-lab}
if ! ls "$lab_cache"/linux-image-6.12.*-unsigned_*.deb "$lab_cache"/linux-image-6.1.0-*-unsigned_*.deb \
  "$lab_cache"/busybox-static_*.deb >/dev/null 2>&1; then
  mkdir -p "$lab_cache"
  newest() { apt-cache search --names-only "$1" | cut -d' ' -f1 | sort -V | tail -n1; }
  v2_kernel=$(newest '^linux-image-6\.12\.[0-9.]*\+deb12-amd64-unsigned$')
  v1_kernel=$(newest '^linux-image-6\.1\.0-[0-9]*-amd64-unsigned$')
  if [ -z "$v2_kernel" ]; then
    apt-get update -qq
    v2_kernel=$(newest '^linux-image-6\.12\.[0-9.]*\+deb12-amd64-unsigned$')
    v1_kernel=$(newest '^linux-image-6\.1\.0-[0-9]*-amd64-unsigned$')
  fi
  (cd "$lab_cache" && apt-get download -qq "$v2_kernel" "$v1_kernel" busybox-static 2>&1 | grep -v 'unsandboxed' || true)
  ls "$lab_cache"/linux-image-6.12.*-unsigned_*.deb "$lab_cache"/linux-image-6.1.0-*-unsigned_*.deb \
    "$lab_cache"/busybox-static_*.deb >/dev/null
fi

# irqbalance for the lab guest's `kvmtune host` test of its ban (run from the cache, never
# installed here: its package would start the daemon on this machine).
if ! ls "$lab_cache"/irqbalance_*.deb >/dev/null 2>&1; then
  (cd "$lab_cache" && apt-get download -qq irqbalance 2>&1 | grep -v 'unsandboxed' || true)
  ls "$lab_cache"/irqbalance_*.deb >/dev/null
fi

# The QEMU guest agent for `kvmtune verify`'s tests: run from the cache, here with its
# unix-listen method and in the lab guest on a virtio-serial port, never installed here (its
# package would start the agent on this machine).
if ! ls "$lab_cache"/qemu-guest-agent_*.deb >/dev/null 2>&1; then
  (cd "$lab_cache" && apt-get download -qq -t bookworm-backports qemu-guest-agent 2>&1 | grep -v 'unsandboxed' || true)
  ls "$lab_cache"/qemu-guest-agent_*.deb >/dev/null
fi

# The guest program kvmtune verify runs in guests, for Linux and for Windows (Debian's own
# Rust 1.63 and MinGW); its tests run the Windows build under Wine.
scripts/build-guest.sh

# Grafana's dashboard schema (@grafana/schema) and TypeScript, from the npm registry at the
# versions package-lock.json pins, for tests/monitoring.rs's dashboard check.
if [ ! -x monitoring/schema-check/node_modules/.bin/tsc ]; then
  npm ci --prefix monitoring/schema-check --no-audit --no-fund --loglevel=error
fi

cargo fmt --all -- --check
# The guest program is a workspace of its own (it builds with Debian's Rust 1.63 for Windows).
cargo fmt --manifest-path crates/kvmtune-guest/Cargo.toml -- --check
cargo clippy --manifest-path crates/kvmtune-guest/Cargo.toml --all-targets --target-dir target/guest-build -- -D warnings
# Every test tier (Cargo.toml's features): the corpus, root, QEMU, libvirt, the lab guest and
# the other system tools are all here, and CI runs every test.
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
# The fuzz targets are a crate of their own, outside the workspace: they must still build.
cargo check --manifest-path fuzz/Cargo.toml --quiet
log=$(mktemp)
# The tests' temporary files go to a directory of this run's own, which must be empty again
# when they end: a test (or a program it runs) that leaves something there would leave it in
# the machine's /tmp. Only the libvirt capabilities cache the private libvirtds share
# (testkit/src/libvirtd.rs) is meant to stay, and goes with the directory.
test_tmp=$(mktemp -d -t kvmtune-tests.XXXXXX)
# Open to every user, as /tmp is: some tests run a program as another user (nobody) there.
chmod 1777 "$test_tmp"
trap 'rm -f "$log"; rm -rf "$test_tmp"' EXIT
{
  TMPDIR=$test_tmp cargo test --workspace --locked --all-targets --all-features 2>&1
  TMPDIR=$test_tmp cargo test --manifest-path crates/kvmtune-guest/Cargo.toml --target-dir target/guest-build 2>&1
} | tee "$log"
status=${PIPESTATUS[0]}
rm -f crates/kvmtune-guest/Cargo.lock
left=$(ls -A "$test_tmp" | grep -vx 'kvmtune-test-libvirt-cache' || true)
if [ -n "$left" ]; then
  echo "kvmtune: the tests left these in their temporary directory $test_tmp:" >&2
  sed 's/^/  /' <<<"$left" >&2
  [ "$status" = 0 ] && status=1
fi
# The readers of what root trusts least, its journals and QMP sockets, and the exit-table
# readers that take whatever users paste, are fuzzed on every run (stable toolchain, no
# sanitizer; cargo-fuzz from the registry when missing). A crash fails the run and leaves its
# input under fuzz/artifacts/.
fuzz_status=0
if [ "$status" = 0 ]; then
  command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked --quiet cargo-fuzz
  for target_seconds in journal:30 qmp_monitor:30 exit_stats:60 guest_report:30; do
    target=${target_seconds%:*} seconds=${target_seconds#*:}
    if ! (cd fuzz && cargo fuzz run -s none "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 2>&1 | tail -n 4); then
      echo "kvmtune: fuzz target $target failed" >&2
      fuzz_status=1
    fi
  done
fi
# One closing line for the whole suite: cargo prints a result per test binary, and the last
# binary (the CLI's own unit tests) has none.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "kvmtune: %d passed, %d failed\n", p, f }' "$log"
[ "$status" = 0 ] && exit "$fuzz_status"
exit "$status"
