#!/usr/bin/env bash
# Benchmark (not a test): one `kvmtune check DIR...` over the corpus's configs beside
# `virt-xml-validate` run once per XML file on the same XMLs (what a CI job over a repository
# of domain XMLs runs today), each timed as a whole, process starts included. Prints the mean
# wall time of RUNS runs and the ratio; `cargo bench -p kvmtune --bench check` gives the
# in-process configs per second.
#
#   bench/check-many.sh            # RUNS=10, corpus at ../shared/corpus
runs=${RUNS:-10}
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
require virt-xml-validate "(libvirt-clients)"
dirs=(user-xml qemu-cmdlines proxmox libvirt)
mapfile -t xmls < <(cd "$corpus" && find user-xml libvirt -name '*.xml' | sort)

seconds() { mean_seconds 1 4 "$@"; }
validate_each() { for xml in "${xmls[@]}"; do virt-xml-validate "$xml" domain; done; }

cd "$corpus"
configs=$("$kvmtune" check "${dirs[@]}" --format json 2>/dev/null | grep -c '"path"' || true)
ours=$(seconds "$kvmtune" check "${dirs[@]}")
theirs=$(seconds validate_each)
printf 'kvmtune check over %s (%d configs, one process): %8.4f s\n' "${dirs[*]}" "$configs" "$ours"
printf 'virt-xml-validate, once per XML (%d XMLs):            %8.4f s\n' "${#xmls[@]}" "$theirs"
awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "ratio: kvmtune takes %.3f of the time virt-xml-validate takes (%.0fx faster), checking more files\n", a / b, b / a }'
