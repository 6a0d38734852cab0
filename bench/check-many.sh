#!/usr/bin/env bash
# Benchmark (not a test): one `kvmtune check DIR...` over the corpus's configs beside
# `virt-xml-validate` run once per XML file on the same XMLs (what a CI job over a repository
# of domain XMLs runs today), each timed as a whole, process starts included. Prints the mean
# wall time of RUNS runs and the ratio; `cargo bench -p kvmtune --bench check` gives the
# in-process configs per second.
#
#   bench/check-many.sh            # RUNS=10, corpus at ../shared/corpus
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
corpus=${KVMTUNE_CORPUS:-../shared/corpus}
runs=${RUNS:-10}
[ -f "$corpus/SOURCES.md" ] || { echo "corpus missing at $corpus" >&2; exit 2; }
command -v virt-xml-validate >/dev/null || { echo "virt-xml-validate missing (libvirt-clients)" >&2; exit 2; }
cargo build --release --quiet
kvmtune=$PWD/target/release/kvmtune
dirs=(user-xml qemu-cmdlines proxmox libvirt)
mapfile -t xmls < <(cd "$corpus" && find user-xml libvirt -name '*.xml' | sort)

seconds() { # command...
  local start end
  start=$(date +%s%N)
  for _ in $(seq "$runs"); do "$@" >/dev/null 2>&1 || true; done
  end=$(date +%s%N)
  awk -v ns=$((end - start)) -v n="$runs" 'BEGIN { printf "%.4f", ns / n / 1e9 }'
}
validate_each() { for xml in "${xmls[@]}"; do virt-xml-validate "$xml" domain; done; }

cd "$corpus"
configs=$("$kvmtune" check "${dirs[@]}" --format json 2>/dev/null | grep -c '"path"' || true)
ours=$(seconds "$kvmtune" check "${dirs[@]}")
theirs=$(seconds validate_each)
printf 'kvmtune check over %s (%d configs, one process): %8.4f s\n' "${dirs[*]}" "$configs" "$ours"
printf 'virt-xml-validate, once per XML (%d XMLs):            %8.4f s\n' "${#xmls[@]}" "$theirs"
awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "ratio: kvmtune takes %.3f of the time virt-xml-validate takes (%.0fx faster), checking more files\n", a / b, b / a }'
