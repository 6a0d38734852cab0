#!/usr/bin/env bash
# Benchmark, not a test: `kvmtune host prepare|release` beside vfio-isolate 0.5.2 (PyPI), the
# peer users script today, doing the same isolation in the lab guest (scripts/lab, cgroup v1,
# the hierarchy vfio-isolate supports best): the VM on CPUs 2-3, the host on 0-1, every root
# cpuset task moved, IRQs masked. Prints the mean time to prepare and to release for each, and
# what each gives back after a kill -9 midway through its changes (snapshot lines still changed).
# shellcheck shell=bash
runs=${RUNS:-10}
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cache=${KVMTUNE_LAB_CACHE:-/var/cache/kvmtune-lab}
peer=$cache/vfio-isolate-0.5.2
if [ ! -d "$peer/vfio_isolate" ]; then
  pip3 install --quiet --target "$peer" vfio-isolate==0.5.2
fi
scripts/lab --cgroup v1 bash -c \
  "RUNS=$runs PEER=$peer; . crates/kvmtune-cli/tests/lab/host-lib.sh; . bench/lab/host-peer.sh; compare"
