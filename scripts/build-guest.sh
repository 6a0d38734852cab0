#!/usr/bin/env bash
# scripts/build-guest.sh: builds the guest program `kvmtune-guest` (crates/kvmtune-guest) for
# the two kinds of guest `kvmtune verify` runs it in:
#   target/guest/kvmtune-guest       Linux x86_64, by the workspace's toolchain
#   target/guest/kvmtune-guest.exe   Windows x86_64, by Debian's own Rust 1.63, the only
#                                    toolchain here with the Windows standard library
#                                    (apt: rustc cargo libstd-rust-dev-windows
#                                    gcc-mingw-w64-x86-64-posix; scripts/test.sh installs them)
# `kvmtune verify` finds both in target/guest beside the kvmtune binary's target directory,
# beside the binary itself, or in /usr/lib/kvmtune/guest (the Debian package).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
crate=$repo/crates/kvmtune-guest
out=$repo/target/guest
mkdir -p "$out"

# The guest crate has no dependencies; a lock file written by the newer cargo would stop
# Debian's older one, so none is kept.
rm -f "$crate/Cargo.lock"
cargo build --release --quiet --manifest-path "$crate/Cargo.toml" --target-dir "$repo/target/guest-build"
cp "$repo/target/guest-build/release/kvmtune-guest" "$out/kvmtune-guest"

if [ ! -x /usr/bin/cargo ] || [ ! -d /usr/lib/rustlib/x86_64-pc-windows-gnu/lib ] || ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
  echo "build-guest: no Windows toolchain (apt-get install rustc cargo libstd-rust-dev-windows gcc-mingw-w64-x86-64-posix); built the Linux program only" >&2
  exit 3
fi
rm -f "$crate/Cargo.lock"
(cd "$crate" && RUSTC=/usr/bin/rustc /usr/bin/cargo build --release --quiet --target x86_64-pc-windows-gnu \
  --target-dir "$repo/target/guest-build")
rm -f "$crate/Cargo.lock"
cp "$repo/target/guest-build/x86_64-pc-windows-gnu/release/kvmtune-guest.exe" "$out/kvmtune-guest.exe"
echo "build-guest: $out/kvmtune-guest and $out/kvmtune-guest.exe"
