#!/usr/bin/env bash
# Benchmark (not a test): time `kvmtune probe --root` on every corpus snapshot, side by side
# with hwloc's `lstopo` reading the same snapshot (`-i DIR`). Prints the mean wall time of
# RUNS runs per tool, in milliseconds.
#
#   bench/probe.sh            # RUNS=50, corpus at ../shared/corpus
#   RUNS=200 KVMTUNE_CORPUS=/path/to/corpus bench/probe.sh
runs=${RUNS:-50}
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
require lstopo-no-graphics "(apt-get install hwloc)"

work=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
trap 'rm -rf "$work"' EXIT

mean_ms() { mean_seconds 1e-3 2 "$@"; }

printf '%-36s %5s %7s %12s %12s\n' snapshot PUs files "kvmtune ms" "lstopo ms"
for tarball in "$corpus"/hwloc/*.tar.bz2 "$corpus"/lscpu-dumps/*.tar.gz; do
  name=$(basename "$tarball"); name=${name%.tar.*}
  mkdir -p "$work/$name" && tar -xf "$tarball" -C "$work/$name"
  root=$(dirname "$(find "$work/$name" -maxdepth 3 \( -name sys -o -name fsroot \) -type d | head -1)")
  [ -d "$root/fsroot" ] && root=$root/fsroot
  pus=$("$kvmtune" probe --root "$root" --format json | python3 -c 'import json,sys; t=json.load(sys.stdin)["host"]["topology"]["online"]; print(len([c for p in t.get("known","").split(",") if p for c in (range(int(p.split("-")[0]), int(p.split("-")[-1])+1))]))')
  files=$(find "$root" -type f | wc -l)
  ours=$(mean_ms "$kvmtune" probe --root "$root" --format json)
  theirs=$(mean_ms lstopo-no-graphics -i "$root" --of xml -)
  printf '%-36s %5s %7s %12s %12s\n' "$name" "$pus" "$files" "$ours" "$theirs"
done
echo "($runs runs each; kvmtune reads every fact, lstopo only the topology)"
