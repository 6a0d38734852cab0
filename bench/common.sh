# Sourced by the benchmark scripts (not run): the repository root as the current directory, the
# corpus checked, a release kvmtune in $kvmtune, and a timer. Set RUNS before sourcing.
# shellcheck shell=bash
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
corpus=${KVMTUNE_CORPUS:-../shared/corpus}
[ -f "$corpus/SOURCES.md" ] || { echo "corpus missing at $corpus" >&2; exit 2; }
cargo build --release --quiet
kvmtune=$PWD/target/release/kvmtune

# require COMMAND "(where it comes from)"
require() { command -v "$1" >/dev/null || { echo "$1 missing $2" >&2; exit 2; }; }

# mean_seconds SCALE DECIMALS COMMAND...: the mean wall time of $runs runs of COMMAND, process
# start included, divided by SCALE (1 for seconds, 1e-3 for milliseconds). Its exit status is
# not the benchmark's business (check exits 1 on findings); the tests hold the results.
mean_seconds() {
  local scale=$1 decimals=$2 start end
  shift 2
  start=$(date +%s%N)
  for _ in $(seq "$runs"); do "$@" >/dev/null 2>&1 || true; done
  end=$(date +%s%N)
  awk -v ns=$((end - start)) -v n="$runs" -v s="$scale" -v d="$decimals" 'BEGIN { printf "%.*f", d, ns / n / 1e9 / s }'
}
